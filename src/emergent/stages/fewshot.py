"""Stage `fewshot`: prompt-based few-shot and in-context learning across backbones.

Reads the task's prepared splits and every configured backbone (by default the pipeline's
`models/pretrained`), runs the protocol (emergent.fewshot.protocol) and writes
`metrics/fewshot.json` {model: {method: {k: {mean, std, n_seeds}}}}, `plots/fewshot/` and
`reports/fewshot/` (summary.md, every run in results.csv). One MLflow parent run, with a
nested run per (model, method, k, seed).
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import manifest_path
from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot.backbones import backbone_info, backbones
from emergent.fewshot.labs import (
    accuracy_metrics,
    build_labs,
    fewshot_data,
    run_labs,
    summary_settings,
)
from emergent.fewshot.report import paired_comparisons, write_outputs
from emergent.hardware import resolve_precision
from emergent.io import sha256_file
from emergent.schema import FewshotScale, Settings
from emergent.tracking import stage_run

log = logging.getLogger(__name__)


def scale_models(cfg: DictConfig, scale: FewshotScale, paths: Paths) -> list[dict[str, str]]:
    """Backbones of other model presets (`fewshot.scale.models`), each built by the tokenizer
    and pretrain stages with `fewshot.scale.overrides`, into `checkpoints/fewshot/<preset>/`
    (kept between runs: a folder that already holds a pretrained model is reused). `cfg`: the
    composed config whose `mlflow` section the sub-runs, composed afresh, are tracked in."""
    from emergent.config import compose
    from emergent.stages import run_stage

    entries = []
    for preset in scale.models:
        out = paths.out("checkpoints", "fewshot", preset)
        if not (out / "models" / "pretrained" / "config.json").is_file():
            sub = compose([f"model={preset}", *scale.overrides])
            sub.mlflow = cfg.mlflow
            sub_paths = Paths(paths.input_dir, out)
            log.info("fewshot: pretraining the %s preset into %s", preset, out)
            for stage in ("tokenizer", "pretrain"):
                run_stage(stage, sub, sub_paths)
        entries.append({"name": preset, "path": str(out / "models" / "pretrained")})
    return entries


def run(cfg: DictConfig, paths: Paths, *, settings: Settings) -> None:
    fcfg = settings.fewshot
    L.seed_everything(settings.seed, verbose=False)
    prepared = paths.inp(settings.data.prepared_dir)
    data, spec = fewshot_data(cfg, settings, prepared)
    manifest = manifest_path(prepared)
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    models = backbones(settings, paths, scale_models(cfg, fcfg.scale, paths))
    labs = build_labs(settings, models, data, spec)  # every config error before any run starts
    # Same rule as the trainers' `precision=auto`: bf16 autocast where the CPU computes bf16
    # natively (training and scoring ~1.5x faster there), fp32 elsewhere.
    precision = resolve_precision(fcfg.precision)
    start = time.perf_counter()
    with (
        stage_run(cfg, "fewshot", "fewshot", data_sha256=data_sha, settings=settings) as tracker,
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")),
    ):
        tracker.log_params({"precision_resolved": precision})
        rows = run_labs(fcfg, labs, tracker, data_sha)
        seconds = time.perf_counter() - start
        tables = write_outputs(
            rows,
            backbone_info(models),
            fcfg.task,
            summary_settings(fcfg, models, data, seconds),
            paths.out("metrics", "fewshot.json"),
            paths.out("plots", "fewshot"),
            paths.out("reports", "fewshot"),
            paired_comparisons(
                rows, [c.model_dump() for c in fcfg.compare], Bootstrap.from_settings(settings)
            ),
        )
        tracker.log_metrics(accuracy_metrics(tables))
        tracker.log_metrics({"wall_seconds": seconds})
        tracker.log_artifact(paths.out("reports", "fewshot"), "reports")
        tracker.log_artifact(paths.out("plots", "fewshot"), "plots")
        log.info("fewshot: %d runs in %.0f s", len(rows), seconds)
