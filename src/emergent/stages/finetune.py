"""Stage `finetune@{task}`: fine-tune the pretrained encoder for one task.

Regularisation (weight decay, dropout), freezing, LoRA, warmup/decay, early stopping and best
weights on the task's headline metric all come from `conf/finetune/` (`shared` merged with the
task's section). The best weights are saved to `models/{task}/` in HF format with `labels.json`
and `training.json` (history, padding share, real tokens per second).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from emergent.config import Paths, task_max_length
from emergent.data.batches import task_datamodule
from emergent.data.layout import manifest_path
from emergent.io import atomic_dir, sha256_file, write_json
from emergent.models import finetuning
from emergent.models.backbone import load_tokenizer
from emergent.models.classifier import mergeable
from emergent.models.summary import TrainingSummary
from emergent.schema import Settings
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tracking import is_rank_zero, stage_run
from emergent.training import MetricHistory, finetune_trainer, mlflow_logger, world_size

log = logging.getLogger(__name__)


@per_task
def run(
    cfg: DictConfig,
    paths: Paths,
    task: Task,
    extra_callbacks: Sequence[Callback] = (),
    extra_tags: Mapping[str, str] | None = None,
    *,
    settings: Settings,
) -> TrainingSummary | None:
    """Fine-tune; returns the run's summary (None outside rank zero). `extra_callbacks` and
    `extra_tags` let `tune` add its pruning callback and nest the run under its study's run."""
    fcfg = settings.finetune.task(task.name)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    pretrained = paths.inp("models", "pretrained")
    causal = finetuning.check_backbone(settings.model, fcfg, task, pretrained)
    prepared = paths.inp(settings.data.prepared_dir)
    tokenizer = load_tokenizer(pretrained)
    max_length = task_max_length(settings, task.name)
    datamodule = task_datamodule(fcfg, task, prepared, tokenizer, max_length, settings.seed)
    built = finetuning.build_task_model(
        fcfg, task, pretrained, tokenizer, datamodule.labels, causal
    )
    module = finetuning.build_module(fcfg, task, built, datamodule, world_size(settings.trainer))
    manifest = manifest_path(prepared)
    ckpt_dir = paths.out("checkpoints", "finetune", task.name)
    with stage_run(
        cfg,
        "finetune",
        task.name,
        data_sha256=sha256_file(manifest) if manifest.is_file() else "",
        extra_tags={"task": task.name, **(extra_tags or {})},
    ) as tracker:
        tracker.log_params({f"params_{k}": v for k, v in built.counts.items()})
        history = MetricHistory(("train_loss",))
        watch = finetuning.callbacks(fcfg, task, ckpt_dir)
        trainer = finetune_trainer(
            settings.trainer,
            fcfg,
            [history, *watch.values(), *extra_callbacks],
            mlflow_logger(cfg, tracker),
            ckpt_dir,
            module.total_steps,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
        if not trainer.is_global_zero or not is_rank_zero():
            return None
        best = watch["best_weights"]
        finetuning.restore_best(module, best)
        summary = finetuning.summarize(
            fcfg, task, max_length, trainer, module, built, history, best, seconds, tracker.run_id
        )
        with atomic_dir(paths.out("models", task.name)) as tmp:
            mergeable(module.model).save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            write_json(tmp / "labels.json", datamodule.labels)
            summary.save(tmp)
        tracker.log_metrics(summary.logged())
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info("finetune %s: %s", task.name, json.dumps(summary.summary_line()))
        return summary
