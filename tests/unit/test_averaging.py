"""The EMA callback: validation, the best-weights checkpoint and the final model all hold the
average; training itself continues from the training weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from emergent.models.averaging import ExponentialMovingAverage


class _Regression(L.LightningModule):
    """A linear model that records the weights each step trained from and each validation saw."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.trained_from: list[torch.Tensor] = []
        self.after_step: list[torch.Tensor] = []
        self.validated: dict[int, torch.Tensor] = {}

    def _weights(self) -> torch.Tensor:
        return self.layer.weight.detach().clone()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.trained_from.append(self._weights())
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        self.after_step.append(self._weights())

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.validated[self.global_step] = self._weights()
        # A loss that falls step by step, so every validation improves and is checkpointed.
        self.log("val_loss", 1.0 / (1 + self.global_step))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    return DataLoader(TensorDataset(x, y), batch_size=4)


def test_checkpoint_and_final_model_hold_the_average_training_does_not(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Regression()
    best = ModelCheckpoint(
        dirpath=tmp_path, monitor="val_loss", mode="min", save_top_k=1, save_weights_only=True
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=8,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[ExponentialMovingAverage(0.5), best],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())

    assert sorted(module.validated) == [2, 4, 6, 8]
    # Validation saw an average, not the weights the last step produced.
    for step, seen in module.validated.items():
        assert not torch.allclose(seen, module.after_step[step - 1])
    # Each step trained from the previous step's result, never from the average shown to
    # validation in between (steps 3, 5 and 7 follow a validation).
    for step in range(1, 8):
        assert torch.equal(module.trained_from[step], module.after_step[step - 1])
    # The weights-only checkpoint holds what validation scored at the best (last) step.
    saved = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    assert torch.equal(saved["state_dict"]["layer.weight"], module.validated[8])
    # And the model training leaves behind is that average.
    assert torch.equal(module.layer.weight.detach(), module.validated[8])


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_decay_outside_the_open_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(decay)
