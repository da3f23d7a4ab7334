"""Fine-tuning in fp32 vs bf16-mixed, and the fused AdamW step vs torch's per-operation loop:
the real fine-tuning stage run three times for a bounded number of steps from the same
pretrained model and seed, then each model scored on the test split. Reports tokens/s of each
run, the headline-metric difference bf16 brings and the speed-up of the fused step.

Runs are sequential (a whole stage each), not interleaved, so machine-load drift is not
cancelled: repeat the bench before trusting a small speed difference.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from emergent.config import Paths
from emergent.data.layout import load_task_split
from emergent.evaluation.predict import predict, torch_forward
from emergent.models.finetuned import load_finetuned
from emergent.models.summary import TrainingSummary
from emergent.schema import Settings
from emergent.stages import run_stage
from emergent.tasks import Task

log = logging.getLogger(__name__)

# Each variant's overrides of the fine-tuning config (`{task}`: the benchmarked task).
FUSED = "finetune.{task}.optimizer.fused"
VARIANTS: dict[str, dict[str, object]] = {
    "fp32": {"trainer.precision": "32-true", FUSED: False},
    "bf16": {"trainer.precision": "bf16-mixed", FUSED: False},
    "bf16_fused": {"trainer.precision": "bf16-mixed", FUSED: True},
}


def test_metric(settings: Settings, paths: Paths, task: Task, model_dir: Path) -> float:
    """The task's headline metric (points) of a fine-tuned model on the test split."""
    model, tokenizer, labels = load_finetuned(task, model_dir)
    task = task.for_model(model.config)  # decode as the model learned to (CRF scores)
    examples = load_task_split(paths.inp(settings.data.prepared_dir), task.name, "test")
    max_length = TrainingSummary.load(model_dir).max_length
    pred, conf = predict(task, torch_forward(model), tokenizer, examples, labels, max_length)
    return task.headline.points(task.evaluate(examples, labels, pred, conf).metrics)


def train_tokens(model_dir: Path, batch: int) -> tuple[float, TrainingSummary]:
    """Real (non-padding) tokens seen in training, as the fine-tune counted them (`batch`:
    the task's `finetune.<task>.batch_size`, which no variant overrides)."""
    summary = TrainingSummary.load(model_dir)
    tokens = summary.real_tokens or summary.global_step * batch
    return float(tokens), summary


def run(cfg: DictConfig, settings: Settings, paths: Paths, task: Task, steps: int = 40) -> dict:
    """Each variant is the real fine-tuning stage, run on `cfg` (the composed config: the
    stage validates it again with the variant's overrides applied); what the bench itself
    reads comes from `settings`, `cfg` validated."""
    pretrained = paths.inp("models", "pretrained")
    if not (pretrained / "config.json").is_file():
        raise FileNotFoundError(f"{pretrained} has no model: run `dvc repro pretrain` first")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as scratch:
        for name, overrides in VARIANTS.items():
            out = Path(scratch) / name
            run_cfg = cfg.copy()
            for key, value in overrides.items():
                OmegaConf.update(run_cfg, key.format(task=task.name), value, force_add=True)
            run_cfg.mlflow.tracking_uri = f"sqlite:///{Path(scratch) / 'mlflow.db'}"
            run_cfg.mlflow.artifact_dir = str(Path(scratch) / "mlartifacts")
            for key, value in (
                ("max_steps", steps),
                # No validation inside the timed run: train_seconds is training only, and
                # the test split scores the final weights.
                ("val_check_interval", steps + 1),
                ("max_epochs", 1000),  # the step budget ends the run
            ):
                OmegaConf.update(run_cfg, f"finetune.{task.name}.{key}", value, force_add=True)
            run_stage("finetune", run_cfg, Paths(paths.input_dir, out), task=task.name)
            model_dir = out / "models" / task.name
            tokens, summary = train_tokens(model_dir, settings.finetune.task(task.name).batch_size)
            results[name] = {
                "train_seconds": summary.train_seconds,
                "steps": summary.global_step,
                "tokens_per_second": tokens / summary.train_seconds,
                "test_metric": test_metric(settings, paths, task, model_dir),
            }
            log.info("finetune %s: %s", name, results[name])
    return {
        "task": task.name,
        "model": settings.model.name,
        "metric_name": task.headline.label,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "variants": results,
        "tokens_per_second": {k: v["tokens_per_second"] for k, v in results.items()},
        "ratios": {
            "bf16_vs_fp32_tokens_per_second": results["bf16"]["tokens_per_second"]
            / results["fp32"]["tokens_per_second"],
            "fused_vs_unfused_tokens_per_second": results["bf16_fused"]["tokens_per_second"]
            / results["bf16"]["tokens_per_second"],
        },
        "bf16_metric_change_points": results["bf16"]["test_metric"]
        - results["fp32"]["test_metric"],
        "target_max_abs_metric_change": 0.5,
    }
