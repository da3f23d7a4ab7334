"""Command `seeds` (`make seeds TASK=ner`, `python -m emergent seeds task=ner`): fine-tune and
score one task over several fine-tuning seeds, and report the mean and spread.

Why: on a 230-sentence test set one run moves by several points between seeds, so a figure
from one seed says little about a recipe and a difference between two recipes from one seed
each says less. Each seed is a full `finetune` run (nested under one MLflow parent run) into
its own folder, scored on validation (what choices are made on) and test (what is reported)
with the task's own metrics; `reports/<task>/seeds.json` holds
`{"seeds", "mean": {metric: v}, "std": {metric: v}, "runs": [...]}` where the metrics are
`validation_<m>` and `test_<m>` and `std` is the sample standard deviation (0 for one seed).
A Hydra CLI command: it writes into its run folder under `outputs/`, never into DVC outputs.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import HELD_OUT, load_task_split
from emergent.evaluation.predict import predict, torch_forward
from emergent.io import write_json
from emergent.models.finetuned import load_finetuned
from emergent.models.summary import TrainingSummary
from emergent.schema import Settings
from emergent.stages import finetune
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tracking import Tracker, stage_run

log = logging.getLogger(__name__)


def summarize(seeds: Sequence[int], runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """seeds.json: per metric the mean and sample standard deviation over the runs (metrics
    every run has), and the runs themselves."""
    names = sorted(set.intersection(*(set(r["metrics"]) for r in runs))) if runs else []
    values = {n: np.array([float(r["metrics"][n]) for r in runs]) for n in names}
    return {
        "seeds": list(seeds),
        "mean": {n: float(v.mean()) for n, v in values.items()},
        "std": {n: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for n, v in values.items()},
        "runs": list(runs),
    }


def score_model(settings: Settings, paths: Paths, task: Task) -> dict[str, float]:
    """`<split>_<metric>` for validation and test of the fine-tuned model in `paths`."""
    model_dir = paths.out("models", task.name)
    model, tokenizer, labels = load_finetuned(task, model_dir)
    task = task.for_model(model.config)
    max_length = TrainingSummary.load(model_dir).max_length
    prepared = paths.inp(settings.data.prepared_dir)
    scores: dict[str, float] = {}
    for split in HELD_OUT:
        examples = load_task_split(prepared, task.name, split)
        pred, conf = predict(task, torch_forward(model), tokenizer, examples, labels, max_length)
        metrics = task.evaluate(examples, labels, pred, conf).metrics
        scores |= {f"{split}_{k}": float(v) for k, v in metrics.items()}
    return scores


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task, *, settings: Settings) -> None:
    seeds = settings.seeds.values  # at least one, no repeats (schema.SeedsConfig)
    keep = settings.seeds.keep_models
    tags = {"task": task.name}
    with stage_run(cfg, "seeds", task.name, extra_tags=tags, settings=settings) as parent:
        parent.log_params({"seeds": seeds})
        runs = []
        for seed in seeds:
            seed_cfg = cfg.copy()
            seed_cfg.seed = seed
            seed_paths = Paths(paths.input_dir, paths.out("seeds", task.name, f"seed-{seed}"))
            seed_settings = settings.model_copy(update={"seed": seed})
            finetune.run(seed_cfg, seed_paths, task, settings=seed_settings)
            model_dir = seed_paths.out("models", task.name)
            metrics = score_model(seed_settings, seed_paths, task)
            run_id = TrainingSummary.load(model_dir).mlflow_run_id
            parent.log_to_run(run_id, metrics, tags={"seeds_parent_run_id": parent.run_id})
            runs.append({"seed": seed, "metrics": metrics, "mlflow_run_id": run_id})
            log.info("seeds %s: seed %d %s", task.name, seed, json.dumps(metrics))
            if not keep:
                shutil.rmtree(model_dir, ignore_errors=True)
        summary = summarize(seeds, runs)
        write_json(paths.out("reports", task.name, "seeds.json"), summary)
        _log_summary(parent, summary)
        headline = f"test_{task.headline.metric}"
        log.info(
            "seeds %s over %s: %s %.4f ± %.4f",
            task.name,
            seeds,
            headline,
            summary["mean"].get(headline, float("nan")),
            summary["std"].get(headline, float("nan")),
        )


def _log_summary(tracker: Tracker, summary: Mapping[str, Any]) -> None:
    tracker.log_metrics({f"mean_{k}": v for k, v in summary["mean"].items()})
    tracker.log_metrics({f"std_{k}": v for k, v in summary["std"].items()})
