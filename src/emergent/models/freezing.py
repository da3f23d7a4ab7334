"""Layer freezing for fine-tuning: embeddings, the bottom N encoder layers, or the whole encoder.

Frozen parameters keep `requires_grad=False` and get no gradient, so AdamW skips them entirely
(no update, no decoupled weight decay): they stay bit-identical. Gradual unfreezing switches
them back on at a configured epoch; they are in the optimizer from the start for that reason.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def encoder_model(model: Any) -> Any:
    """The bare encoder (BertModel) inside a task model, also through a PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model


def freeze(
    model: Any, embeddings: bool = False, layers: int = 0, encoder: bool = False
) -> list[str]:
    """Freeze the requested parts; returns the names of frozen parameters."""
    bert = encoder_model(model)
    modules: list[Any] = []
    if encoder:
        modules.append(bert)
    else:
        if embeddings:
            modules.append(bert.embeddings)
        n_layers = len(bert.encoder.layer)
        if layers > n_layers:
            raise ValueError(f"finetune.freeze.layers={layers} but the encoder has {n_layers}")
        modules.extend(bert.encoder.layer[:layers])
    frozen: list[str] = []
    names = {id(p): n for n, p in model.named_parameters()}
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(False)
            frozen.append(names.get(id(param), "?"))
    return frozen


def unfreeze_encoder(model: Any) -> int:
    """Make every encoder parameter trainable again; returns how many were frozen."""
    count = 0
    for param in encoder_model(model).parameters():
        if not param.requires_grad:
            param.requires_grad_(True)
            count += param.numel()
    return count


class GradualUnfreezing(Callback):
    """Unfreeze the whole encoder at the start of epoch `at_epoch`."""

    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.at_epoch:
            count = unfreeze_encoder(pl_module.model)
            log.info("epoch %d: unfroze %d encoder parameters", self.at_epoch, count)
