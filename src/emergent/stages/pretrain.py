"""Stage `pretrain`: masked-language-model training of the encoder on the corpus.

Resumable: `last.ckpt` is written every `pretrain.checkpoint_every_n_steps` steps into
`checkpoints/pretrain/<config fingerprint>/`; with `pretrain.resume=true` a killed run continues
from there. The folder is removed once the stage completes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time

import lightning as L
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.mlm import MLMDataModule
from emergent.evaluation.plots import plot_curves, write_csv
from emergent.io import atomic_dir, sha256_file, write_json
from emergent.models.backbone import count_parameters, load_mlm_model, load_tokenizer
from emergent.models.mlm import MaskedLMModule
from emergent.tracking import is_rank_zero, stage_run
from emergent.training import (
    MetricHistory,
    build_trainer,
    config_fingerprint,
    last_checkpoint,
    mlflow_logger,
    periodic_checkpoint,
)

log = logging.getLogger(__name__)


def masking(cfg: DictConfig) -> dict[str, float]:
    return {
        "mlm_probability": float(cfg.mlm_probability),
        "mask_replace_prob": float(cfg.mask_replace_prob),
        "random_replace_prob": float(cfg.random_replace_prob),
    }


def run(cfg: DictConfig, paths: Paths) -> None:
    pcfg = cfg.pretrain
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    prepared = paths.inp(cfg.data.prepared_dir)
    manifest = prepared / "manifest.json"
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    tokenizer = load_tokenizer(paths.inp("models", "tokenizer"))
    block_size = min(int(pcfg.block_size), int(cfg.model.max_length))
    datamodule = MLMDataModule(
        prepared / "corpus",
        tokenizer,
        block_size=block_size,
        batch_size=int(pcfg.batch_size),
        masking=masking(pcfg),
        seed=int(cfg.seed),
        num_workers=int(pcfg.num_workers),
        max_train_blocks=pcfg.get("max_train_blocks"),
    )
    datamodule.setup("fit")
    max_steps = int(pcfg.max_steps or -1)
    if max_steps <= 0:
        per_epoch = len(datamodule.train_dataloader()) // int(cfg.trainer.devices or 1)
        max_steps = per_epoch * int(pcfg.max_epochs or 1)

    with stage_run(cfg, "pretrain", "pretrain", data_sha256=data_sha) as tracker:
        model = load_mlm_model(cfg.model, tokenizer)
        module = MaskedLMModule(
            model,
            lr=float(pcfg.optimizer.lr),
            weight_decay=float(pcfg.optimizer.weight_decay),
            betas=tuple(pcfg.optimizer.betas),
            eps=float(pcfg.optimizer.eps),
            warmup_ratio=float(pcfg.warmup_ratio),
            total_steps=max_steps,
        )
        counts = count_parameters(model)
        tracker.log_params(
            {"params_total": counts["total"], "params_trainable": counts["trainable"]}
        )
        ckpt_dir = paths.out(
            "checkpoints",
            "pretrain",
            config_fingerprint(cfg, ["model", "pretrain", "trainer", "seed"], data_sha),
        )
        history = MetricHistory(("train_loss", "tok_s", "lr"))
        trainer = build_trainer(
            cfg.trainer,
            max_steps=max_steps,
            val_check_interval=int(pcfg.val_check_interval),
            limit_val_batches=pcfg.limit_val_batches,
            gradient_clip_val=float(pcfg.gradient_clip_val),
            callbacks=[history, periodic_checkpoint(ckpt_dir, int(pcfg.checkpoint_every_n_steps))],
            logger=mlflow_logger(cfg, tracker),
            default_root_dir=paths.out("checkpoints", "pretrain"),
        )
        resume, resumed_from = last_checkpoint(ckpt_dir) if pcfg.resume else (None, 0)
        if resume:
            log.info("resuming from %s (step %d)", resume, resumed_from)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        train_seconds = time.perf_counter() - start
        final = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        if not trainer.is_global_zero or not is_rank_zero():
            return

        metrics = {
            "val_loss": float(final["val_loss"]),
            "perplexity": float(final["perplexity"]),
            "masked_accuracy": float(final["masked_accuracy"]),
            "tokens_per_second": module.tokens_per_second * trainer.world_size,
            "train_seconds": train_seconds,
            "global_step": int(trainer.global_step),
            "resumed_from_step": resumed_from,
            "steps_this_run": int(trainer.global_step) - resumed_from,
            "params_total": counts["total"],
            "params_trainable": counts["trainable"],
        }
        with atomic_dir(paths.out("models", "pretrained")) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
        write_json(paths.out("metrics", "pretrain.json"), metrics)
        write_plots(paths, history)
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "global_step"})
        tracker.log_artifact(paths.out("plots", "pretrain"), "plots")
        tracker.log_artifact(paths.out("models", "pretrained", "config.json"), "model")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info("pretrain: %s", json.dumps(metrics))


def write_plots(paths: Paths, history: MetricHistory) -> None:
    out = paths.out("plots", "pretrain")
    with atomic_dir(out) as tmp:
        write_csv(tmp / "train.csv", history.train, ["step", "train_loss", "lr"])
        write_csv(
            tmp / "validation.csv",
            history.val,
            ["step", "val_loss", "perplexity", "masked_accuracy"],
        )
        plot_curves(
            tmp / "curves.png",
            {
                "train loss": (
                    [r["step"] for r in history.train],
                    [r["train_loss"] for r in history.train],
                ),
                "validation loss": (
                    [r["step"] for r in history.val],
                    [r["val_loss"] for r in history.val],
                ),
                "validation perplexity": (
                    [r["step"] for r in history.val],
                    [r["perplexity"] for r in history.val],
                ),
            },
            title="MLM pretraining",
            log_y=("validation perplexity",),
        )
