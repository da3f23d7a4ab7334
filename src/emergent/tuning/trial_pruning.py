"""Trial pruning inside Lightning: Optuna's own callback, reporting every validation check.

`optuna_integration.PyTorchLightningPruningCallback` (5.0) imports Lightning 2's `lightning`
namespace and works as is; it reports with `step=current_epoch`, though, and Optuna ignores a
second report for the same step, so a task that validates twice per epoch
(`finetune.sentiment.val_check_interval: 0.5`) would have half its checks unseen by the pruner.
This subclass reports the n-th validation check as step n (so `n_warmup_steps` counts checks)
and keeps the upstream DDP path unchanged. It also remembers the trial's MLflow run, so a pruned
trial's run can be marked as such.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import optuna
from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback


class ValidationPruning(PyTorchLightningPruningCallback):
    """Report `monitor` after each validation check; raise `optuna.TrialPruned` when told to."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
        super().__init__(trial, monitor)
        self.checks = 0
        self.last: float | None = None  # the last reported value (a pruned trial's value)
        self.run_id: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.run_id = getattr(trainer.logger, "run_id", None)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.is_ddp_backend:
            super().on_validation_end(trainer, pl_module)
            return
        score: Any = trainer.callback_metrics.get(self.monitor)
        if score is None:
            warnings.warn(f"{self.monitor!r} was not logged: nothing to prune on", stacklevel=1)
            return
        step = self.checks
        self.checks += 1
        self.last = float(score)
        self._trial.report(self.last, step=step)
        if self._trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at validation check {step} ({self.monitor}={float(score):.4f})"
            )
