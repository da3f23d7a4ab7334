"""Lightning plumbing shared by pretraining and fine-tuning: trainer, checkpoints, history."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from emergent.config import plain_dict
from emergent.errors import StageError
from emergent.hardware import device_count, resolve_accelerator, resolve_precision
from emergent.io import atomic_dir
from emergent.schema import (
    FinetuneShared,
    PretrainConfig,
    TrainerConfig,
    TrainerTyped,
    validate_section,
)
from emergent.tracking import Tracker, tracking_uri

log = logging.getLogger(__name__)

# Lightning's INFO lines that say nothing a run can act on, logged on every Trainer we build
# (so once per trial of `tune`, per seed of `seeds`): its advertisement for its hosted logger,
# which devices exist (the stage's run records the accelerator it resolved), that a setting
# of 1 / 1.0 means what it says, and that a fit ran to its configured max_epochs/max_steps.
# A checkpoint it resumes from, and anything else it says, stays.
VENDOR_NOTES = re.compile(
    r"💡 Tip:|(GPU|TPU|HPU) available:|LOCAL_RANK: \d+ - |"
    r"`Trainer\(\w+=1(\.0)?\)` was configured so |`Trainer\.fit` stopped: `max_(epochs|steps)="
)

# Lightning warnings nobody running this project can act on, by (message regex, module):
# a deprecation inside Lightning's own pytree helper (torch 2.13 renamed LeafSpec),
# ThroughputMonitor asking for FLOPs we do not count (finetune logs tokens/s, not MFU), and
# a tiny run (smoke, a tuning trial) having fewer batches than `trainer.log_every_n_steps`
# (MetricHistory keeps every step's loss regardless).
VENDOR_WARNINGS = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        r"lightning\.pytorch\.utilities\._pytree",
    ),
    (
        r"When using the `ThroughputMonitor`, you need to define a `flops_per_batch`",
        r"lightning\.pytorch\.callbacks\.throughput_monitor",
    ),
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        r"lightning\.pytorch\.loops\.fit_loop",
    ),
)


class _DropVendorNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not VENDOR_NOTES.match(str(record.msg))


def route_lightning_logs() -> None:
    """One line per Lightning event: its records go through the application's handlers only.

    `import lightning` attaches its own console handler ("INFO: ...") to the `lightning`
    logger, and the records also propagate to the root handler `emergent.cli.configure_logging`
    installs, so every Lightning message was printed twice, bare and with a timestamp. Also
    drops Lightning's VENDOR_NOTES and filters the warnings in VENDOR_WARNINGS where they arise,
    for the stages and for the commands that run them (`tune`, `seeds`, the benchmarks).
    Idempotent; called when this module is imported (after `lightning` is).
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's own console handlers
                logger.removeHandler(handler)
        logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logger = logging.getLogger(name)  # a filter sees only its own logger's records
        if not any(isinstance(f, _DropVendorNotes) for f in logger.filters):
            logger.addFilter(_DropVendorNotes())
    for message, module in VENDOR_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)


route_lightning_logs()


def config_fingerprint(cfg: DictConfig, keys: list[str], extra: str = "") -> str:
    """Short hash of the config sections that define a training run (for resumable folders)."""
    text = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, keys), resolve=True) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class MetricHistory(Callback):
    """Keeps every logged train step and validation result for plots and metrics files."""

    def __init__(self, train_keys: tuple[str, ...] = ("train_loss",)) -> None:
        self.train_keys = train_keys
        self.train: list[dict[str, float]] = []
        self.val: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if k in self.train_keys}
        if row:
            self.train.append({"step": trainer.global_step, **row})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val") or k in {"perplexity", "masked_accuracy"}
        }
        if row:
            self.val.append({"step": trainer.global_step, **row})
        if row and trainer.state.fn == "fit" and trainer.progress_bar_callback is None:
            # where no bar is drawn (piped output, CI), one line per validation during fit
            log.info(
                "step %d: %s",
                trainer.global_step,
                ", ".join(f"{k} {v:.4g}" for k, v in row.items()),
            )


class ProgressLog(Callback):
    """Where no bar is drawn (piped output, CI), a line at most every `every_seconds` of
    training: step of total, the last loss, seconds per step and time left. Validation lines
    alone leave a long fine-tune silent for many minutes (SmolLM2 on 2 cores: ~17 min)."""

    def __init__(self, every_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_seconds = every_seconds
        self.clock = clock
        self.started: tuple[float, int] | None = None
        self.last_line = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = (self.clock(), trainer.global_step)
        self.last_line = self.started[0]

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = self.clock()
        if self.started is None or now - self.last_line < self.every_seconds:
            return
        if not getattr(trainer, "is_global_zero", True):  # one line per run, not per process
            return
        self.last_line = now
        start, first_step = self.started
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        known = 0 < total < float("inf")  # an iterable without a length has no total
        per_step = (now - start) / max(1, step - first_step)  # validation time included
        parts = [
            f"step {step}/{int(total)} ({100 * step / total:.0f}%)" if known else f"step {step}"
        ]
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            parts.append(f"train_loss {float(loss):.4g}")
        parts.append(f"{per_step:.2f} s/step")
        if known:
            parts.append(f"~{(total - step) * per_step / 60:.1f} min left")
        log.info(", ".join(parts))


def mlflow_logger(cfg: DictConfig, tracker: Tracker) -> Any:
    """A Lightning MLFlowLogger writing into the stage's own run (per-step metrics)."""
    if not tracker.enabled:
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(
        experiment_name=tracker.experiment,
        tracking_uri=tracking_uri(cfg),
        run_id=tracker.run_id,
        log_model=False,
    )


def world_size(trainer_cfg: TrainerTyped) -> int:
    """How many processes a run of `trainer_cfg` trains on (devices per node times nodes):
    what a step's batch is split over, so what a schedule's steps are counted in."""
    return device_count(trainer_cfg.devices, trainer_cfg.accelerator) * trainer_cfg.num_nodes


def finetune_trainer(
    trainer_cfg: TrainerTyped,
    fcfg: FinetuneShared,
    callbacks: list[Callback],
    logger: Any,
    root: Path,
    schedule_steps: int,
) -> L.Trainer:
    """The trainer of a fine-tune: `trainer` with `finetune.<task>`'s budget (steps, epochs,
    validation interval, batch limit) and gradient clipping.

    Lightning counts whole epochs only, so a fractional `max_epochs` (1.5) runs as the
    schedule's `schedule_steps` within the epochs rounded up."""
    max_steps = fcfg.max_steps or -1
    max_epochs = fcfg.max_epochs
    if max_epochs > 0 and max_epochs != int(max_epochs):
        max_steps = max_steps if max_steps > 0 else schedule_steps
        max_epochs = math.ceil(max_epochs)
    return build_trainer(
        trainer_cfg,
        max_steps=max_steps,
        max_epochs=int(max_epochs),
        val_check_interval=fcfg.val_check_interval,
        limit_train_batches=fcfg.limit_train_batches,
        gradient_clip_val=fcfg.gradient_clip_val,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=root,
    )


def trainer_settings(trainer_cfg: TrainerTyped | DictConfig) -> TrainerTyped:
    """`trainer` typed. The stages pass `Settings.trainer`; a composed section (what the
    export's recovery fine-tune still passes, or a test's few keys) is validated here, a key
    a stage sets itself named with the key to use instead."""
    if isinstance(trainer_cfg, TrainerTyped):
        return trainer_cfg
    return validate_section(
        TrainerConfig, plain_dict(trainer_cfg, "trainer", resolve=True), "trainer"
    )


def build_trainer(
    trainer_cfg: TrainerTyped | DictConfig,
    *,
    max_steps: int = -1,
    max_epochs: int | None = None,
    val_check_interval: int | float | None = None,
    limit_val_batches: int | float | None = None,
    limit_train_batches: int | float | None = None,
    gradient_clip_val: float | None = None,
    callbacks: list[Callback] | None = None,
    logger: Any = False,
    default_root_dir: Path | None = None,
    enable_checkpointing: bool = True,
) -> L.Trainer:
    typed = trainer_settings(trainer_cfg)
    # Lightning's own arguments as `trainer` gives them (a key conf/ leaves out stays
    # Lightning's default: `exclude_unset`), the stage's reserved ones refused by the schema.
    settings = typed.model_dump(exclude_unset=True)
    # `auto` picks CUDA where present (a clear error where `gpu` is asked for and absent), and
    # bf16-mixed on GPUs and CPUs with native bf16; the choice goes into the stage's run.
    accelerator = resolve_accelerator(typed.accelerator, typed.devices)
    settings["accelerator"] = accelerator
    settings["precision"] = resolve_precision(typed.precision, accelerator=accelerator)
    # A progress bar only where one can be drawn: piped into a file, CI or `dvc repro | tee`, the
    # bar is a block of final-frame text; MetricHistory logs a line per validation instead.
    settings["enable_progress_bar"] = bool(typed.enable_progress_bar) and sys.stdout.isatty()
    settings.pop("progress_log_seconds", None)  # ours, not a Lightning argument
    if not settings["enable_progress_bar"]:
        callbacks = [*(callbacks or []), ProgressLog(typed.progress_log_seconds)]
    if logger:
        logger.log_hyperparams(
            {"precision_resolved": settings["precision"], "accelerator_resolved": accelerator}
        )
    step_based = isinstance(val_check_interval, int) and max_steps and max_steps > 0
    return L.Trainer(
        **settings,
        max_steps=max_steps,
        max_epochs=max_epochs if max_epochs is not None else (-1 if step_based else None),
        val_check_interval=val_check_interval,
        check_val_every_n_epoch=None if step_based else 1,
        limit_val_batches=limit_val_batches,
        limit_train_batches=limit_train_batches,
        gradient_clip_val=gradient_clip_val,
        callbacks=callbacks or [],
        logger=logger,
        default_root_dir=str(default_root_dir) if default_root_dir else None,
        enable_checkpointing=enable_checkpointing,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )


def last_checkpoint(directory: Path) -> tuple[Path | None, int]:
    """The resumable `last.ckpt` in `directory` and its global step; (None, 0) if there is none
    or it cannot be read (a run killed while writing it starts over, with a warning)."""
    import torch

    path = Path(directory) / "last.ckpt"
    if not path.is_file():
        return None, 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        return path, int(state["global_step"])
    except Exception as err:  # a truncated file from a killed writer
        log.warning("ignoring unreadable checkpoint %s (%s); starting over", path, err)
        return None, 0


def periodic_checkpoint(directory: Path, every_n_steps: int) -> ModelCheckpoint:
    """`last.ckpt` every N training steps, for resuming a killed run."""
    return ModelCheckpoint(
        dirpath=str(directory),
        filename="step-{step}",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=max(1, int(every_n_steps)),
    )


def pretrain_steps(pcfg: PretrainConfig, trainer_cfg: TrainerTyped, batches_per_epoch: int) -> int:
    """`pretrain.max_steps`, or when unset the steps of `pretrain.max_epochs` over the corpus
    (each device takes its share of the batches)."""
    max_steps = -1 if pcfg.max_steps is None else pcfg.max_steps
    if max_steps < 0:
        per_epoch = batches_per_epoch // device_count(trainer_cfg.devices, trainer_cfg.accelerator)
        max_steps = per_epoch * pcfg.max_epochs
    return max_steps


def snapshot_steps(fractions: list[float], max_steps: int) -> list[int]:
    """Global steps at which to keep a snapshot: `fractions` of `max_steps`, in [0, 1)."""
    if any(not 0 <= float(f) < 1 for f in fractions):
        raise StageError(f"pretrain.snapshots: fractions must lie in [0, 1), got {list(fractions)}")
    return sorted({round(float(f) * max_steps) for f in fractions}) if max_steps > 0 else []


class HFSnapshots(Callback):
    """Saves the HF model (`save_pretrained`) at chosen global steps, for scale-axis studies."""

    def __init__(self, directory: Path, steps: list[int]) -> None:
        self.directory = Path(directory)
        self.steps = set(steps)

    @property
    def saved(self) -> bool:
        return self.directory.is_dir() and any(self.directory.iterdir())

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.on_train_batch_end(trainer, pl_module)  # step 0: before any update

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        step = trainer.global_step
        if step in self.steps and trainer.is_global_zero:
            with atomic_dir(self.directory / f"step-{step}") as tmp:
                pl_module.model.save_pretrained(str(tmp), safe_serialization=True)
