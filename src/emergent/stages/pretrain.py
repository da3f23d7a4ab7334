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

import lightning as L
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import manifest_path
from emergent.data.mlm import mlm_datamodule
from emergent.evaluation.plots import plot_curves, write_csv
from emergent.io import atomic_dir, sha256_file, write_json
from emergent.models.backbone import (
    count_parameters,
    is_causal,
    load_causal_backbone,
    load_tokenizer,
)
from emergent.models.mlm import build_mlm, pretrain_metrics, save_pretrained
from emergent.schema import Settings
from emergent.tracking import is_rank_zero, stage_run
from emergent.training import (
    HFSnapshots,
    MetricHistory,
    build_trainer,
    config_fingerprint,
    last_checkpoint,
    mlflow_logger,
    periodic_checkpoint,
    pretrain_steps,
    snapshot_steps,
)

log = logging.getLogger(__name__)


def run(cfg: DictConfig, paths: Paths, *, settings: Settings) -> None:
    if is_causal(settings.model):
        pass_on_causal(cfg, paths, settings)
        return
    pcfg = settings.pretrain
    L.seed_everything(settings.seed, workers=True, verbose=False)
    prepared = paths.inp(settings.data.prepared_dir)
    manifest = manifest_path(prepared)
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    tokenizer = load_tokenizer(paths.inp("models", "tokenizer"))
    datamodule = mlm_datamodule(settings, prepared, tokenizer)
    max_steps = pretrain_steps(pcfg, settings.trainer, len(datamodule.train_dataloader()))
    with stage_run(cfg, "pretrain", "pretrain", data_sha256=data_sha) as tracker:
        model, module, counts = build_mlm(settings, tokenizer, datamodule.train_blocks, max_steps)
        tracker.log_params({f"params_{k}": v for k, v in counts.items()})
        keys = ["model", "pretrain", "trainer", "seed"]
        ckpt_dir = paths.out("checkpoints", "pretrain", config_fingerprint(cfg, keys, data_sha))
        history = MetricHistory(("train_loss", "tok_s", "lr"))
        steps = snapshot_steps(pcfg.snapshots, max_steps)
        snapshots = HFSnapshots(ckpt_dir / "snapshots", steps)
        trainer = build_trainer(
            settings.trainer,
            max_steps=max(max_steps, 1),
            val_check_interval=pcfg.val_check_interval,
            limit_val_batches=pcfg.limit_val_batches,
            gradient_clip_val=pcfg.gradient_clip_val,
            callbacks=[
                history,
                snapshots,
                periodic_checkpoint(ckpt_dir, pcfg.checkpoint_every_n_steps),
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
        seconds = time.perf_counter() - start
        final = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        if not trainer.is_global_zero or not is_rank_zero():
            return
        metrics = pretrain_metrics(
            final, module, trainer, seconds, resumed_from, counts, skipped=max_steps == 0
        )
        kept = snapshots.directory if snapshots.saved else None
        save_pretrained(paths.out("models", "pretrained"), model, tokenizer, settings.model, kept)
        write_json(paths.out("metrics", "pretrain.json"), metrics)
        write_plots(paths, history)
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "global_step"})
        tracker.log_artifact(paths.out("plots", "pretrain"), "plots")
        tracker.log_artifact(paths.out("models", "pretrained", "config.json"), "model")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info("pretrain: %s", json.dumps(metrics))


SKIP_REASON = "a causal LM is not trained with masked-LM pretraining: its backbone is passed on"


def pass_on_causal(cfg: DictConfig, paths: Paths, settings: Settings) -> None:
    """Save the causal backbone unchanged into `models/pretrained` (with the tokenizer stage's
    tokenizer), so fine-tuning loads it like any other; the metrics say it was skipped."""
    log.info("pretrain skipped for %s: %s", settings.model.name, SKIP_REASON)
    manifest = manifest_path(paths.inp(settings.data.prepared_dir))
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    tokenizer = load_tokenizer(paths.inp("models", "tokenizer"))
    with stage_run(cfg, "pretrain", "pretrain", data_sha256=data_sha) as tracker:
        model = load_causal_backbone(settings.model)
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
