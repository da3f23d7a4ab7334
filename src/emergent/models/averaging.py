"""An exponential moving average (EMA) of the weights during fine-tuning.

Small fine-tuning sets make the last steps' weights noisy; averaging them (Polyak averaging,
as in timm's ModelEmaV2 or Lightning's `WeightAveraging`) gives a smoother model at no extra
forward pass. Lightning's callback keeps the average and shows it to validation, but swaps the
training weights back at the end of every validation epoch: a weights-only `ModelCheckpoint`
(which saves later, at validation end) would then store the training weights under the
average's score. This subclass keeps the average in place until training resumes, so early
stopping, the best-weights checkpoint and the final model all see the weights that were scored.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ExponentialMovingAverage(WeightAveraging):
    """EMA of every parameter and buffer, updated after each optimizer step.

    `decay` is the weight of the old average per step: 0.99 averages over roughly the last
    100 steps. The first update copies the weights (torch's `AveragedModel`).
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))
        self._showing_average = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None and not self._showing_average:
            self._swap_models(pl_module)
            self._showing_average = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the average in place: checkpointing and early stopping run after this."""

    def _restore_training_weights(self, pl_module: L.LightningModule) -> None:
        if self._showing_average:
            self._swap_models(pl_module)
            self._showing_average = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._restore_training_weights(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_training_weights(pl_module)
        super().on_train_end(trainer, pl_module)
