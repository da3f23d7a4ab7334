"""Fine-tuning in fp32 vs bf16-mixed: the real fine-tuning stage run twice for a bounded
number of steps from the same pretrained model and seed, then both models scored on the test
split. Reports tokens/s of each run and the headline-metric difference bf16 brings.

Runs are sequential (a whole stage each), not interleaved, so machine-load drift is not
cancelled: repeat the bench before trusting a small speed difference.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from emergent.config import Paths, finetune_config, task_max_length
from emergent.data.prepare import load_task_split
from emergent.evaluation.report import predict, task_metrics, torch_forward
from emergent.export.pipeline import example_text, gate_metric, metric_name
from emergent.models.classifier import load_finetuned
from emergent.stages import run_stage

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


def test_metric(cfg: DictConfig, paths: Paths, task: str, model_dir: Path) -> float:
    model, tokenizer, labels = load_finetuned(task, model_dir)
    examples = load_task_split(paths.inp(cfg.data.prepared_dir), task, "test")
    max_length = task_max_length(cfg, task)
    _, pred, conf = predict(task, torch_forward(model), tokenizer, examples, labels, max_length)
    return gate_metric(task, task_metrics(task, examples, labels, pred, conf)[0])


def train_tokens(model_dir: Path, cfg: DictConfig, paths: Paths, task: str) -> tuple[float, dict]:
    """Tokens seen in training: steps x batch size x mean encoded length of train examples."""
    summary = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    _, tokenizer, _ = load_finetuned(task, model_dir)
    rows = load_task_split(paths.inp(cfg.data.prepared_dir), task, "train")[:2000]
    texts = [example_text(task, r) for r in rows]
    enc = tokenizer(texts, truncation=True, max_length=task_max_length(cfg, task))
    mean = sum(len(ids) for ids in enc["input_ids"]) / len(texts)
    batch = int(finetune_config(cfg, task).batch_size)
    return summary["global_step"] * batch * mean, summary


def run(cfg: DictConfig, paths: Paths, task: str, steps: int = 40) -> dict:
    pretrained = paths.inp("models", "pretrained")
    if not (pretrained / "config.json").is_file():
        raise FileNotFoundError(f"{pretrained} has no model: run `dvc repro pretrain` first")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as scratch:
        for name, precision in PRECISIONS.items():
            out = Path(scratch) / name
            run_cfg = cfg.copy()
            run_cfg.trainer.precision = precision
            run_cfg.mlflow.tracking_uri = f"sqlite:///{Path(scratch) / 'mlflow.db'}"
            run_cfg.mlflow.artifact_dir = str(Path(scratch) / "mlartifacts")
            for key, value in (
                ("max_steps", steps),
                # No validation inside the timed run: train_seconds is training only, and
                # the test split scores the final weights.
                ("val_check_interval", steps + 1),
                ("max_epochs", 1000),  # the step budget ends the run
            ):
                OmegaConf.update(run_cfg, f"finetune.{task}.{key}", value, force_add=True)
            run_stage("finetune", run_cfg, Paths(paths.input_dir, out), task=task)
            model_dir = out / "models" / task
            tokens, summary = train_tokens(model_dir, run_cfg, paths, task)
            results[name] = {
                "train_seconds": summary["train_seconds"],
                "steps": summary["global_step"],
                "tokens_per_second": tokens / summary["train_seconds"],
                "test_metric": test_metric(run_cfg, paths, task, model_dir),
            }
            log.info("finetune %s: %s", name, results[name])
    return {
        "task": task,
        "model": cfg.model.name,
        "metric_name": metric_name(task),
        "steps": steps,
        "threads": torch.get_num_threads(),
        "variants": results,
        "tokens_per_second": {k: v["tokens_per_second"] for k, v in results.items()},
        "ratios": {
            "bf16_vs_fp32_tokens_per_second": results["bf16"]["tokens_per_second"]
            / results["fp32"]["tokens_per_second"]
        },
        "bf16_metric_change_points": results["bf16"]["test_metric"]
        - results["fp32"]["test_metric"],
        "target_max_abs_metric_change": 0.5,
    }
