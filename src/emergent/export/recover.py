"""Recovery fine-tuning after structured pruning (export stage).

Removing half the heads and FFN neurons costs points that a short fine-tune on the task's
training split gives back (on the default sentiment model: 1.9 points lost, 0.5 after 150
steps), so a more heavily pruned, faster model fits within `export.max_metric_drop`. It reuses
the fine-tuning stage's pieces: the task's datamodule and collator from `finetune.<task>`, the
TaskModule with its optimizer and schedule, and the Lightning trainer from `trainer`.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L

from emergent.data.batches import task_datamodule
from emergent.models.classifier import task_module
from emergent.models.distill import DistilledTaskModule
from emergent.schema import Settings
from emergent.tasks import Task
from emergent.training import build_trainer

log = logging.getLogger(__name__)


def recover(
    model: Any,
    tokenizer: Any,
    task: Task,
    labels: list[str],
    settings: Settings,
    prepared: Path,
    max_length: int,
    steps: int,
    teacher: Any = None,
) -> float:
    """Train `model` in place for `steps` steps on the task's training split (the fine-tuning
    configuration's batch size, optimizer, learning rate and schedule); return the seconds.
    With a `teacher` (the unpruned model) and `export.prune.distill` set, the loss mixes in
    distillation from the teacher's logits.

    Seeded here, not once per stage: otherwise a level's result would depend on how many
    candidates drew random numbers before it (the same NER level measured a validation drop
    of -0.1 or 3.0 points depending on whether level 0 ran first).
    """
    L.seed_everything(settings.seed, workers=True, verbose=False)
    fcfg = settings.finetune.task(task.name)
    datamodule = task_datamodule(
        fcfg, task, prepared, tokenizer, max_length, settings.seed, labels=list(labels)
    )
    distill = settings.export.prune.distill if settings.export.prune else None
    # A CRF-trained model keeps its transition scores: every candidate then decodes with the
    # fine-tuned model's, which the package's task definition carries.
    extra: dict[str, Any] = {"crf_lr": 0.0}
    if teacher is not None and distill:
        extra |= {
            "module_class": DistilledTaskModule,
            "teacher": teacher,
            "alpha": distill.alpha,
            "temperature": distill.temperature,
        }
    module = task_module(fcfg, model.train(), task, list(labels), steps, **extra)
    trainer = build_trainer(
        settings.trainer,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        gradient_clip_val=float(fcfg.gradient_clip_val),
        enable_checkpointing=False,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # no validation here by design: the pruning gate validates the exported candidate
        warnings.filterwarnings(
            "ignore",
            message=r"You defined a `validation_step` but have no `val_dataloader`",
            module=r"lightning\.pytorch\.trainer\.configuration_validator",
        )
        trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    model.eval()
    seconds = time.perf_counter() - start
    log.info("recovery fine-tune: %d steps in %.0f s", steps, seconds)
    return seconds
