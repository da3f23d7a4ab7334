"""Stage `finetune@{task}`: fine-tune the pretrained encoder for one task.

Regularisation (weight decay, dropout), freezing, LoRA, warmup/decay, early stopping and best
weights on the task's headline metric all come from `conf/finetune/` (`shared` merged with the
task's section). The best weights are saved to `models/{task}/` in HF format with `labels.json`
and `training.json` (history, padding share, real tokens per second).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from omegaconf import DictConfig, OmegaConf

from emergent.config import Paths, finetune_config, task_max_length
from emergent.data.layout import manifest_path
from emergent.data.tasks import task_datamodule
from emergent.errors import ConfigError, StageError
from emergent.hardware import device_count
from emergent.io import atomic_dir, sha256_file, write_json
from emergent.models.averaging import ExponentialMovingAverage
from emergent.models.backbone import count_parameters, is_causal, load_tokenizer, lowercases
from emergent.models.classifier import (
    apply_lora,
    check_causal,
    load_task_model,
    mergeable,
    task_module,
)
from emergent.models.freezing import GradualUnfreezing, freeze
from emergent.models.pooling import POOLING_KEY
from emergent.models.summary import TrainingSummary
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tasks.shapes import uses_shapes
from emergent.tracking import is_rank_zero, stage_run
from emergent.training import MetricHistory, build_trainer, mlflow_logger

log = logging.getLogger(__name__)


def dropout_overrides(fcfg: DictConfig, causal: bool = False) -> dict[str, Any]:
    """The config overrides for `finetune.<task>.dropout`: BERT's three rates, or a causal
    LM's (Llama has attention dropout only; its score head has none)."""
    if causal:
        return {"attention_dropout": float(fcfg.dropout.attention)}
    return {
        "hidden_dropout_prob": float(fcfg.dropout.hidden),
        "attention_probs_dropout_prob": float(fcfg.dropout.attention),
        "classifier_dropout": float(fcfg.dropout.classifier),
    }


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens of a batch (what ThroughputMonitor counts as items)."""
    return int(batch["attention_mask"].sum())


def callbacks(fcfg: DictConfig, task: Task, ckpt_dir: Any) -> dict[str, Any]:
    """The configured callbacks, watching the task's headline metric."""
    watch = {"monitor": f"val_{task.headline.metric}", "mode": task.headline.mode}
    built = {
        "early_stopping": instantiate(fcfg.callbacks.early_stopping, **watch),
        "best_weights": instantiate(fcfg.callbacks.best_weights, **watch, dirpath=str(ckpt_dir)),
        "throughput": ThroughputMonitor(
            batch_size_fn=lambda b: len(b["input_ids"]), length_fn=real_tokens
        ),
    }
    if fcfg.freeze.unfreeze_at_epoch is not None:
        built["unfreeze"] = GradualUnfreezing(int(fcfg.freeze.unfreeze_at_epoch))
    if fcfg.get("ema_decay"):  # the schema keeps it in [0, 1)
        built["ema"] = ExponentialMovingAverage(float(fcfg.ema_decay))
    return built


def word_shapes(fcfg: DictConfig, task: Task, tokenizer: Any) -> bool:
    """`finetune.<task>.word_shapes` made concrete: `auto` is on for word-level tasks whose
    tokenizer lower-cases (the case they lose comes back as word shapes)."""
    setting = fcfg.get("word_shapes", False)
    if setting == "auto":
        return bool(task.reads_shapes and lowercases(tokenizer))
    if setting not in (True, False):
        raise ConfigError("finetune.word_shapes", f"must be auto, true or false, got {setting!r}")
    if setting and not task.reads_shapes:
        raise ConfigError("finetune.word_shapes", f"{task.kind} tasks do not read word shapes")
    return bool(setting)


@per_task
def run(
    cfg: DictConfig,
    paths: Paths,
    task: Task,
    extra_callbacks: Sequence[Callback] = (),
    extra_tags: Mapping[str, str] | None = None,
) -> TrainingSummary | None:
    """Fine-tune; returns the run's summary (None outside rank zero). `extra_callbacks` and
    `extra_tags` let `tune` add its pruning callback and nest the run under its study's run."""
    fcfg = finetune_config(cfg, task.name)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    pretrained = paths.inp("models", "pretrained")
    if not (pretrained / "config.json").is_file():
        raise StageError(f"{pretrained} has no model: run the pretrain stage first")
    causal = is_causal(cfg.model)
    if causal:  # before any data is encoded: a causal LM cannot do every task
        check_causal(task, str(fcfg.get("pooling") or "cls"))
    prepared = paths.inp(cfg.data.prepared_dir)
    tokenizer = load_tokenizer(pretrained)
    max_length = task_max_length(cfg, task.name)
    datamodule = task_datamodule(fcfg, task, prepared, tokenizer, max_length, int(cfg.seed))
    overrides = dropout_overrides(fcfg, causal)
    if causal:  # the classifier finds each text's last token by the padding id
        overrides["pad_token_id"] = tokenizer.pad_token_id
    model = load_task_model(
        task,
        str(pretrained),
        datamodule.labels,
        overrides,
        init=str(fcfg.init),
        pooling=str(fcfg.get("pooling") or "cls"),
        word_shapes=word_shapes(fcfg, task, tokenizer),
        causal=causal,
    )
    frozen = freeze(
        model,
        embeddings=bool(fcfg.freeze.embeddings),
        layers=int(fcfg.freeze.layers),
        encoder=bool(fcfg.freeze.encoder),
    )
    if fcfg.strategy == "lora":
        model = apply_lora(task, model, OmegaConf.to_container(fcfg.lora))  # type: ignore[arg-type]
    elif fcfg.strategy != "full":
        raise ConfigError("finetune.strategy", f"must be 'full' or 'lora', got {fcfg.strategy!r}")
    counts = count_parameters(model)
    log.info(
        "%s: %d/%d parameters trainable (%d frozen tensors)",
        task.name,
        counts["trainable"],
        counts["total"],
        len(frozen),
    )

    devices = device_count(cfg.trainer.devices, str(cfg.trainer.accelerator))
    world = devices * int(cfg.trainer.get("num_nodes") or 1)
    batches = math.ceil(len(datamodule.encoded["train"]) / (int(fcfg.batch_size) * world))
    if fcfg.limit_train_batches:
        batches = min(batches, int(fcfg.limit_train_batches))
    max_steps = int(fcfg.max_steps or -1)
    total_steps = max_steps if max_steps > 0 else batches * int(fcfg.max_epochs)
    module = task_module(
        fcfg,
        model,
        task,
        datamodule.labels,
        total_steps,
        class_weights=datamodule.class_weights() if fcfg.class_weights else None,
    )
    manifest = manifest_path(prepared)
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    ckpt_dir = paths.out("checkpoints", "finetune", task.name)
    with stage_run(
        cfg,
        "finetune",
        task.name,
        data_sha256=data_sha,
        extra_tags={"task": task.name, **(extra_tags or {})},
    ) as tracker:
        tracker.log_params(
            {"params_total": counts["total"], "params_trainable": counts["trainable"]}
        )
        history = MetricHistory(("train_loss",))
        built = callbacks(fcfg, task, ckpt_dir)
        trainer = build_trainer(
            cfg.trainer,
            max_steps=max_steps,
            max_epochs=int(fcfg.max_epochs),
            val_check_interval=fcfg.val_check_interval,
            limit_train_batches=fcfg.limit_train_batches,
            gradient_clip_val=float(fcfg.gradient_clip_val),
            callbacks=[history, *built.values(), *extra_callbacks],
            logger=mlflow_logger(cfg, tracker),
            default_root_dir=paths.out("checkpoints", "finetune", task.name),
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        train_seconds = time.perf_counter() - start
        if not trainer.is_global_zero or not is_rank_zero():
            return None
        best = built["best_weights"]
        if best.best_model_path:
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
        module.sync_tag_scores()  # the best weights' transition scores go into the config
        best_score = best.best_model_score
        summary = TrainingSummary(
            task=task.name,
            headline=task.headline.metric,
            max_length=max_length,
            best_val=float(best_score) if best_score is not None else None,
            best_step=_best_step(history, f"val_{task.headline.metric}", task),
            global_step=trainer.global_step,
            world_size=trainer.world_size,
            num_nodes=trainer.num_nodes,
            epochs_completed=trainer.current_epoch,
            train_seconds=train_seconds,
            padding_share=module.padding_share,
            real_tokens=module.real_tokens,
            real_tokens_per_second=module.real_tokens / train_seconds * trainer.world_size,
            params_total=counts["total"],
            params_trainable=counts["trainable"],
            frozen_tensors=len(frozen),
            init=str(fcfg.init),
            strategy=str(fcfg.strategy),
            pooling=getattr(mergeable(module.model).config, POOLING_KEY, None),
            word_shapes=uses_shapes(mergeable(module.model).config),
            mlflow_run_id=tracker.run_id,
            history={"train": history.train, "validation": history.val},
        )
        with atomic_dir(paths.out("models", task.name)) as tmp:
            mergeable(module.model).save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            write_json(tmp / "labels.json", datamodule.labels)
            summary.save(tmp)
        tracker.log_metrics(summary.logged())
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info(
            "finetune %s: %s",
            task.name,
            json.dumps(summary.summary_line()),
        )
        return summary


def _best_step(history: MetricHistory, key: str, task: Task) -> int | None:
    """The step of the best validation headline (ties: the earliest)."""
    best: tuple[float, float] | None = None
    for row in history.val:
        if key in row and (best is None or task.headline.improved(row[key], best[0])):
            best = (row[key], row["step"])
    return int(best[1]) if best else None
