"""Stage `evaluate@{task}`: test-split metrics, plots, error report, logged to MLflow.

Outside DVC, `python -m emergent evaluate task=ner data.ner.test=<file>` evaluates the trained
model on any CoNLL/JSONL/CSV file without retraining.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from emergent.config import Paths, task_max_length
from emergent.data.prepare import load_task_split, read_task_file
from emergent.evaluation import plots
from emergent.evaluation.report import predict, task_metrics, torch_forward
from emergent.io import atomic_dir, sha256_file, write_json, write_jsonl
from emergent.models.classifier import load_finetuned
from emergent.tracking import stage_run

log = logging.getLogger(__name__)


def test_examples(cfg: DictConfig, paths: Paths, task: str) -> tuple[list[dict], str]:
    """The prepared test split; in a CLI run with `data.<task>.test` set, that file instead."""
    source = cfg.data[task].get("test")
    if not paths.is_dvc and source:
        examples, _ = read_task_file(task, str(source), cfg.data[task], paths.input_dir)
        return examples, str(source)
    return load_task_split(paths.inp(cfg.data.prepared_dir), task, "test"), "prepared test split"


def run(cfg: DictConfig, paths: Paths, task: str) -> None:
    model_dir = paths.inp("models", task)
    model, tokenizer, labels = load_finetuned(task, model_dir)
    examples, source = test_examples(cfg, paths, task)
    max_length = task_max_length(cfg, task)
    training = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    manifest = paths.inp(cfg.data.prepared_dir, "manifest.json")
    with stage_run(
        cfg,
        "evaluate",
        task,
        data_sha256=sha256_file(manifest) if manifest.is_file() else "",
        extra_tags={
            "task": task,
            "finetune_run_id": training.get("mlflow_run_id"),
            "test_source": source,
        },
    ) as tracker:
        _, pred, conf = predict(task, torch_forward(model), tokenizer, examples, labels, max_length)
        metrics, report, confusion = task_metrics(task, examples, labels, pred, conf)
        metrics["n_examples"] = len(examples)
        write_json(paths.out("metrics", f"{task}.json"), metrics)
        write_task_plots(paths, task, metrics, confusion, training)
        with atomic_dir(paths.out("reports", task)) as tmp:
            write_jsonl(tmp / "errors.jsonl", report)
        tracker.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        tracker.log_artifact(paths.out("plots", task), "plots")
        tracker.log_artifact(paths.out("reports", task, "errors.jsonl"), "reports")
        headline = metrics["f1"] if task == "ner" else metrics["f1_macro"]
        log.info(
            "evaluate %s on %s (%d examples): headline %.4f", task, source, len(examples), headline
        )


def write_task_plots(
    paths: Paths, task: str, metrics: dict, confusion: dict, training: dict
) -> None:
    """DVC plot data (confusion rows, per-class scores, training curves) and PNG figures."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    per_class = metrics["per_type"] if task == "ner" else metrics["per_class"]
    history = training.get("history", {})
    with atomic_dir(paths.out("plots", task)) as tmp:
        pairs = [
            {"actual": labels[i], "predicted": labels[j]}
            for i, row in enumerate(matrix)
            for j, n in enumerate(row)
            for _ in range(n)
        ]
        plots.write_csv(tmp / "confusion.csv", pairs, ["actual", "predicted"])
        plots.write_csv(
            tmp / "per_class.csv",
            [{"class": k, **v} for k, v in per_class.items()],
            ["class", "precision", "recall", "f1", "support"],
        )
        plots.write_csv(tmp / "train.csv", history.get("train", []), ["step", "train_loss"])
        plots.write_csv(
            tmp / "validation.csv",
            history.get("validation", []),
            ["step", "val_loss", "val_f1", "val_accuracy"],
        )
        plots.plot_confusion(tmp / "confusion.png", labels, matrix, f"{task}: test confusion")
        plots.plot_bars(
            tmp / "per_class.png",
            per_class,
            ["precision", "recall", "f1"],
            f"{task}: per-class test scores",
        )
        train, val = history.get("train", []), history.get("validation", [])
        plots.plot_curves(
            tmp / "training.png",
            {
                "train loss": ([r["step"] for r in train], [r["train_loss"] for r in train]),
                "validation loss": ([r["step"] for r in val], [r["val_loss"] for r in val]),
                "validation F1": ([r["step"] for r in val], [r["val_f1"] for r in val]),
            },
            title=f"{task}: fine-tuning",
        )
