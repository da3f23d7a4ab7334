"""Stage `finetune@{task}`: fine-tune the pretrained encoder for NER or sentiment.

Regularisation (weight decay, dropout), freezing, LoRA, warmup/decay and early stopping on the
validation headline metric (entity F1 / macro F1) all come from `conf/finetune/`. The best
weights are restored and saved to `models/{task}/` in HF format with `labels.json`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf

from emergent.config import Paths, finetune_config, task_max_length
from emergent.data.tasks import TaskDataModule
from emergent.io import atomic_dir, sha256_file, write_json
from emergent.models.backbone import count_parameters, load_tokenizer
from emergent.models.classifier import (
    BestWeights,
    TaskModule,
    apply_lora,
    load_task_model,
    mergeable,
)
from emergent.models.freezing import GradualUnfreezing, freeze
from emergent.tracking import is_rank_zero, stage_run
from emergent.training import MetricHistory, build_trainer, mlflow_logger

log = logging.getLogger(__name__)


def dropout_overrides(fcfg: DictConfig) -> dict[str, Any]:
    return {
        "hidden_dropout_prob": float(fcfg.dropout.hidden),
        "attention_probs_dropout_prob": float(fcfg.dropout.attention),
        "classifier_dropout": float(fcfg.dropout.classifier),
    }


def run(cfg: DictConfig, paths: Paths, task: str) -> None:
    fcfg = finetune_config(cfg, task)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    pretrained = paths.inp("models", "pretrained")
    if not (pretrained / "config.json").is_file():
        raise FileNotFoundError(f"{pretrained} has no model: run the pretrain stage first")
    prepared = paths.inp(cfg.data.prepared_dir)
    tokenizer = load_tokenizer(pretrained)
    datamodule = TaskDataModule(
        task,
        prepared,
        tokenizer,
        batch_size=int(fcfg.batch_size),
        max_length=task_max_length(cfg, task),
        label_all_tokens=bool(fcfg.label_all_tokens),
        num_workers=int(fcfg.num_workers),
        seed=int(cfg.seed),
    )
    datamodule.setup()
    model = load_task_model(
        task, str(pretrained), datamodule.labels, dropout_overrides(fcfg), init=str(fcfg.init)
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
        raise ValueError(f"finetune.strategy must be 'full' or 'lora', got {fcfg.strategy!r}")
    counts = count_parameters(model)
    log.info(
        "%s: %d/%d parameters trainable (%d frozen tensors)",
        task,
        counts["trainable"],
        counts["total"],
        len(frozen),
    )

    batches = math.ceil(len(datamodule.encoded["train"]) / int(fcfg.batch_size))
    if fcfg.limit_train_batches:
        batches = min(batches, int(fcfg.limit_train_batches))
    max_steps = int(fcfg.max_steps or -1)
    total_steps = max_steps if max_steps > 0 else batches * int(fcfg.max_epochs)
    module = TaskModule(
        model,
        task,
        datamodule.labels,
        optimizer=OmegaConf.to_container(fcfg.optimizer),  # type: ignore[arg-type]
        lr=float(fcfg.lr),
        head_lr=fcfg.head_lr,
        weight_decay=float(fcfg.weight_decay),
        warmup_ratio=float(fcfg.warmup_ratio),
        total_steps=total_steps,
        class_weights=datamodule.class_weights() if task != "ner" and fcfg.class_weights else None,
    )
    manifest = prepared / "manifest.json"
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    with stage_run(
        cfg, "finetune", task, data_sha256=data_sha, extra_tags={"task": task}
    ) as tracker:
        tracker.log_params(
            {"params_total": counts["total"], "params_trainable": counts["trainable"]}
        )
        history = MetricHistory(("train_loss",))
        best = BestWeights("val_f1")
        callbacks = [
            history,
            best,
            EarlyStopping("val_f1", mode="max", patience=int(fcfg.early_stopping_patience)),
        ]
        if fcfg.freeze.unfreeze_at_epoch is not None:
            callbacks.append(GradualUnfreezing(int(fcfg.freeze.unfreeze_at_epoch)))
        trainer = build_trainer(
            cfg.trainer,
            max_steps=max_steps,
            max_epochs=int(fcfg.max_epochs),
            val_check_interval=fcfg.val_check_interval,
            limit_train_batches=fcfg.limit_train_batches,
            gradient_clip_val=float(fcfg.gradient_clip_val),
            callbacks=callbacks,
            logger=mlflow_logger(cfg, tracker),
            enable_checkpointing=False,
            default_root_dir=paths.out("checkpoints", "finetune", task),
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        train_seconds = time.perf_counter() - start
        if not trainer.is_global_zero or not is_rank_zero():
            return
        best.restore(module)
        summary = {
            "task": task,
            "best_val_f1": best.best,
            "best_step": best.best_step,
            "global_step": trainer.global_step,
            "epochs_completed": trainer.current_epoch,
            "train_seconds": train_seconds,
            "params_total": counts["total"],
            "params_trainable": counts["trainable"],
            "frozen_tensors": len(frozen),
            "init": str(fcfg.init),
            "strategy": str(fcfg.strategy),
            "mlflow_run_id": tracker.run_id,
            "history": {"train": history.train, "validation": history.val},
        }
        with atomic_dir(paths.out("models", task)) as tmp:
            mergeable(module.model).save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            write_json(tmp / "labels.json", datamodule.labels)
            write_json(tmp / "training.json", summary)
        tracker.log_metrics(
            {k: v for k, v in summary.items() if k in {"best_val_f1", "best_step", "train_seconds"}}
        )
        log.info(
            "finetune %s: %s",
            task,
            json.dumps({k: v for k, v in summary.items() if k != "history"}),
        )
