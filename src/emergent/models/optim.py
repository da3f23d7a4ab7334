"""Optimizers and schedules shared by pretraining and fine-tuning."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm", "norm.weight")
_ENCODER_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


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
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
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


def layer_depth(name: str, num_layers: int) -> int:
    """Where a parameter sits in the stack: 0 for the embeddings (word shapes included),
    i + 1 for encoder layer i, `num_layers` + 1 for anything above (pooler, task head)."""
    match = _ENCODER_LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else num_layers + 1


def layerwise_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    lr: float,
    decay: float,
    num_layers: int,
    include_frozen: bool = False,
) -> list[dict[str, Any]]:
    """`param_groups` per depth with layer-wise learning-rate decay (ELECTRA, BEiT): the top
    encoder layer and everything above it train at `lr`, each layer below at `decay` times the
    one above, the embeddings at `lr * decay ** num_layers`. Lower layers hold the general
    features pretraining paid for, so a small task moves them less. `decay` 1: `param_groups`
    itself (one rate, the groups and their order exactly as without the option)."""
    if decay == 1.0:
        return param_groups(named_params, weight_decay, lr, include_frozen)
    by_depth: dict[int, list[tuple[str, nn.Parameter]]] = {}
    for name, param in named_params:
        by_depth.setdefault(layer_depth(name, num_layers), []).append((name, param))
    groups = []
    for depth in sorted(by_depth):
        scale = float(decay) ** max(0, num_layers - depth)
        groups += param_groups(by_depth[depth], weight_decay, lr * scale, include_frozen)
    return groups


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to each group's peak lr over `warmup_ratio` of the steps, then linear
    decay to 0 (transformers' `get_linear_schedule_with_warmup`, sized by a ratio)."""
    from transformers import get_linear_schedule_with_warmup

    total = max(1, int(total_steps))
    return get_linear_schedule_with_warmup(optimizer, int(total * float(warmup_ratio)), total)
