"""Stage `pretrain`: masked-language-model training of the encoder on the corpus.

Resumable: `last.ckpt` is written every `pretrain.checkpoint_every_n_steps` steps into
`checkpoints/pretrain/<config fingerprint>/`; with `pretrain.resume=true` a killed run continues
from there. The folder is removed once the stage completes.

A causal backbone (`model.family=causal`, e.g. SmolLM2) is not a masked LM: the stage passes it
on unchanged (de-quantized, safetensors) with `skipped: true` in its metrics, so fine-tuning
reads every backbone from `models/pretrained`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import corpus_path, manifest_path
from emergent.data.mlm import MLMDataModule, masking_settings
from emergent.errors import StageError
from emergent.evaluation.plots import plot_curves, write_csv
from emergent.hardware import device_count
from emergent.io import atomic_dir, sha256_file, write_json
from emergent.models.backbone import (
    backbone_dir,
    count_parameters,
    is_causal,
    load_causal_backbone,
    load_mlm_model,
    load_tokenizer,
)
from emergent.models.mlm import (
    MaskedLMModule,
    head_parameter_names,
    init_output_bias,
    set_dropout,
    tie_decoder,
)
from emergent.models.pooling import carry_pooling
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


def run(cfg: DictConfig, paths: Paths) -> None:
    if is_causal(cfg.model):
        pass_on_causal(cfg, paths)
        return
    pcfg = cfg.pretrain
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    prepared = paths.inp(cfg.data.prepared_dir)
    manifest = manifest_path(prepared)
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    tokenizer = load_tokenizer(paths.inp("models", "tokenizer"))
    block_size = min(int(pcfg.block_size), int(cfg.model.max_length))
    datamodule = MLMDataModule(
        corpus_path(prepared, "train").parent,
        tokenizer,
        block_size=block_size,
        batch_size=int(pcfg.batch_size),
        masking=masking_settings(pcfg),
        seed=int(cfg.seed),
        num_workers=int(pcfg.num_workers),
        max_train_blocks=pcfg.get("max_train_blocks"),
    )
    datamodule.setup("fit")
    max_steps = -1 if pcfg.max_steps is None else int(pcfg.max_steps)
    if max_steps < 0:
        per_epoch = len(datamodule.train_dataloader()) // device_count(
            cfg.trainer.devices, str(cfg.trainer.accelerator)
        )
        max_steps = per_epoch * int(pcfg.max_epochs or 1)
    head = pcfg.get("head") or {}

    with stage_run(cfg, "pretrain", "pretrain", data_sha256=data_sha) as tracker:
        model = load_mlm_model(cfg.model, tokenizer)
        tie_decoder(model)
        if pcfg.get("dropout") is not None:
            set_dropout(model, float(pcfg.dropout))
        if head.get("init_bias", "unigram") == "unigram":
            assert datamodule.train_blocks is not None
            init_output_bias(model, datamodule.train_blocks, tokenizer.all_special_ids)
        # Only a pretrained encoder has an old body and a new head; from scratch all is new.
        new_head = head_parameter_names(model) if cfg.model.pretrained else set()
        module = MaskedLMModule(
            model,
            lr=float(pcfg.optimizer.lr),
            weight_decay=float(pcfg.optimizer.weight_decay),
            betas=tuple(pcfg.optimizer.betas),
            eps=float(pcfg.optimizer.eps),
            warmup_ratio=float(pcfg.warmup_ratio),
            total_steps=max(max_steps, 1),
            head_params=new_head,
            head_lr=head.get("lr"),
            head_warmup_steps=int(head.get("warmup_steps") or 0) if new_head else 0,
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
        snapshots = HFSnapshots(
            ckpt_dir / "snapshots", snapshot_steps(pcfg.get("snapshots") or [], max_steps)
        )
        trainer = build_trainer(
            cfg.trainer,
            max_steps=max(max_steps, 1),
            val_check_interval=int(pcfg.val_check_interval),
            limit_val_batches=pcfg.limit_val_batches,
            gradient_clip_val=float(pcfg.gradient_clip_val),
            callbacks=[
                history,
                snapshots,
                periodic_checkpoint(ckpt_dir, int(pcfg.checkpoint_every_n_steps)),
            ],
            logger=mlflow_logger(cfg, tracker),
            default_root_dir=paths.out("checkpoints", "pretrain"),
        )
        resume, resumed_from = last_checkpoint(ckpt_dir) if pcfg.resume else (None, 0)
        if resume:
            log.info("resuming from %s (step %d)", resume, resumed_from)
        start = time.perf_counter()
        if max_steps > 0:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        else:
            log.info("pretrain.max_steps=0: skipping training, saving the initialised MLM")
        train_seconds = time.perf_counter() - start
        final = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        if not trainer.is_global_zero or not is_rank_zero():
            return

        metrics = {
            "skipped": max_steps == 0,
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
            if cfg.model.get("source"):  # the backbone's pooling, for `pooling=auto`
                carry_pooling(backbone_dir(cfg.model), tmp)
            if snapshots.saved:
                shutil.copytree(snapshots.directory, tmp / "snapshots")
                for snapshot in (tmp / "snapshots").iterdir():
                    tokenizer.save_pretrained(str(snapshot))
        write_json(paths.out("metrics", "pretrain.json"), metrics)
        write_plots(paths, history)
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "global_step"})
        tracker.log_artifact(paths.out("plots", "pretrain"), "plots")
        tracker.log_artifact(paths.out("models", "pretrained", "config.json"), "model")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info("pretrain: %s", json.dumps(metrics))


SKIP_REASON = "a causal LM is not trained with masked-LM pretraining: its backbone is passed on"


def pass_on_causal(cfg: DictConfig, paths: Paths) -> None:
    """Save the causal backbone unchanged into `models/pretrained` (with the tokenizer stage's
    tokenizer), so fine-tuning loads it like any other; the metrics say it was skipped."""
    log.info("pretrain skipped for %s: %s", cfg.model.name, SKIP_REASON)
    manifest = manifest_path(paths.inp(cfg.data.prepared_dir))
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    tokenizer = load_tokenizer(paths.inp("models", "tokenizer"))
    with stage_run(cfg, "pretrain", "pretrain", data_sha256=data_sha) as tracker:
        model = load_causal_backbone(cfg.model)
        if model.config.pad_token_id is None:  # sequence classification finds the last token
            model.config.pad_token_id = tokenizer.pad_token_id
        counts = count_parameters(model)
        metrics = {
            "skipped": True,
            "reason": SKIP_REASON,
            "train_seconds": 0.0,
            "global_step": 0,
            "params_total": counts["total"],
            "params_trainable": counts["trainable"],
        }
        if not is_rank_zero():
            return
        with atomic_dir(paths.out("models", "pretrained")) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
        write_json(paths.out("metrics", "pretrain.json"), metrics)
        tracker.log_params(
            {"params_total": counts["total"], "params_trainable": counts["trainable"]}
        )
        tracker.log_metrics({"skipped": 1.0, "train_seconds": 0.0})
        tracker.log_artifact(paths.out("models", "pretrained", "config.json"), "model")


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
