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

from emergent.errors import ConfigError

log = logging.getLogger(__name__)


def encoder_model(model: Any) -> Any:
    """The bare backbone (BertModel, LlamaModel) inside a task model, also through PEFT."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model


def stacked_layers(backbone: Any) -> Any:
    """The backbone's transformer layers, bottom first: BERT's `encoder.layer`, Llama's
    `layers`; None for a layout freezing does not know."""
    encoder = getattr(backbone, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer"):
        return encoder.layer
    return getattr(backbone, "layers", None)


def embedding_module(backbone: Any) -> Any:
    """BERT's embeddings block (words, positions, segments, norm); else the input embeddings."""
    embeddings = getattr(backbone, "embeddings", None)
    return embeddings if embeddings is not None else backbone.get_input_embeddings()


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
            modules.append(embedding_module(bert))
        stack = stacked_layers(bert)
        if stack is None and layers:
            raise ConfigError(
                "finetune.freeze.layers",
                f"cannot find the layers of a {type(bert).__name__} backbone to freeze",
            )
        n_layers = len(stack) if stack is not None else 0
        if layers > n_layers:
            raise ValueError(f"finetune.freeze.layers={layers} but the encoder has {n_layers}")
        modules.extend(stack[:layers] if stack is not None else [])
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
