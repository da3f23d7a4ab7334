"""Optimizers and schedules shared by pretraining and fine-tuning."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm", "norm.weight")


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    lr: float | None = None,
    include_frozen: bool = False,
) -> list[dict[str, Any]]:
    """Two groups: weights with decay; biases and LayerNorm without (as in BERT).

    `include_frozen` keeps frozen parameters in the groups (they get no gradient, so the
    optimizer skips them) so that gradual unfreezing can train them later.
    """
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad and not include_frozen:
            continue
        (no_decay if any(nd in name for nd in NO_DECAY) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if lr is not None:
        for group in groups:
            group["lr"] = lr
    return [g for g in groups if g["params"]]


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to each group's peak lr over `warmup_ratio` of the steps, then linear
    decay to 0 (transformers' `get_linear_schedule_with_warmup`, sized by a ratio)."""
    from transformers import get_linear_schedule_with_warmup

    total = max(1, int(total_steps))
    return get_linear_schedule_with_warmup(optimizer, int(total * float(warmup_ratio)), total)
