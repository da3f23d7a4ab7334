"""The evaluate stage's work on a test set: score the model (metrics with their bootstrap
intervals), and write the report folder (worst errors, details) and the plot folder (DVC plot
data and figures). Only the evaluate stage imports it, so a change to the error ranking
re-runs `evaluate@*` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emergent.evaluation import mistakes, plots
from emergent.evaluation.bootstrap import Bootstrap, headline_interval, interval
from emergent.evaluation.predict import predict
from emergent.io import atomic_dir, write_json, write_jsonl
from emergent.tasks import Evaluation, Task


def headline_bounds(
    settings: Bootstrap, task: Task, examples: list[dict], labels: list[str], pred: list
) -> dict[str, float]:
    """`<metric>_ci_low/_ci_high`: the bootstrap interval of the headline, and of the other
    metrics a task names in `interval_metrics` (NER: strict and conlleval F1), over the same
    resamples (none for fewer than two examples, where resampling says nothing)."""
    if len(examples) < 2:
        return {}
    low, high = headline_interval(task, examples, labels, pred, settings)
    bounds = {f"{task.headline.metric}_ci_low": low, f"{task.headline.metric}_ci_high": high}
    extra = [m for m in task.interval_metrics if m != task.headline.metric]
    if extra:
        counts = task.outcome_counts(examples, labels, pred)
        for metric in extra:
            low, high = interval(
                lambda t, m=metric: task.scores_from_counts(t)[m],
                [counts],
                settings,
            )
            bounds |= {f"{metric}_ci_low": low, f"{metric}_ci_high": high}
    return bounds


@dataclass
class TestScores:
    """A model's predictions on a test set, the task's evaluation of them and the headline
    figures (metrics, intervals, example count) that go to `metrics/<task>.json`."""

    __test__ = False  # not a pytest test class

    examples: list[dict]
    labels: list[str]
    pred: list
    conf: list
    result: Evaluation
    metrics: dict[str, Any]

    def per_class_f1(self) -> dict[str, float]:
        """`test_<class>_f1` per class (the MLflow metrics a run comparison reads)."""
        return {
            f"test_{name}_{key}": value
            for name, scores in self.result.per_class.items()
            for key, value in scores.items()
            if key == "f1"
        }


def score_test(
    task: Task,
    forward: Callable[..., Any],
    tokenizer: Any,
    labels: list[str],
    examples: list[dict],
    max_length: int,
    settings: Bootstrap,
) -> TestScores:
    """Predict `examples` with `forward` and evaluate them with the task's metrics."""
    pred, conf = predict(task, forward, tokenizer, examples, labels, max_length)
    result = task.evaluate(examples, labels, pred, conf)
    metrics = {
        **result.metrics,
        **headline_bounds(settings, task, examples, labels, pred),
        "n_examples": len(examples),
    }
    return TestScores(examples, labels, pred, conf, result, metrics)


def write_report(folder: Path, task: Task, scores: TestScores, cost: Mapping[str, float]) -> None:
    """`reports/<task>/`: the worst errors and the details (metrics, training cost, per-class
    scores, confusion) that are too many for DVC's metrics."""
    with atomic_dir(folder) as tmp:
        worst = mistakes.worst(
            task, scores.examples, scores.labels, scores.pred, scores.conf, task.errors_kept
        )
        write_jsonl(tmp / "errors.jsonl", worst)
        write_json(
            tmp / "details.json",
            {
                "metrics": scores.metrics,
                "training": dict(cost),
                "per_class": scores.result.per_class,
                "confusion": scores.result.confusion,
            },
        )


def write_task_plots(
    folder: Path,
    task: Task,
    result: Evaluation,
    history: Mapping[str, Sequence[Mapping[str, float]]],
) -> None:
    """DVC plot data (confusion rows, per-class scores, training curves) and PNG figures."""
    labels, matrix = result.confusion["labels"], result.confusion["matrix"]
    headline = f"val_{task.headline.metric}"
    with atomic_dir(folder) as tmp:
        pairs = [
            {"actual": labels[i], "predicted": labels[j]}
            for i, row in enumerate(matrix)
            for j, n in enumerate(row)
            for _ in range(n)
        ]
        plots.write_csv(tmp / "confusion.csv", pairs, ["actual", "predicted"])
        plots.write_csv(
            tmp / "per_class.csv",
            [{"class": k, **v} for k, v in result.per_class.items()],
            ["class", "precision", "recall", "f1", "support"],
        )
        train = list(history.get("train", []))
        plots.write_csv(tmp / "train.csv", train, ["step", "train_loss"])
        validation: list[dict[str, Any]] = [
            {"step": r["step"], "val_loss": r.get("val_loss"), "val_headline": r.get(headline)}
            for r in history.get("validation", [])
        ]
        plots.write_csv(tmp / "validation.csv", validation, ["step", "val_loss", "val_headline"])
        plots.plot_confusion(tmp / "confusion.png", labels, matrix, f"{task.name}: test confusion")
        plots.plot_bars(
            tmp / "per_class.png",
            result.per_class,
            ["precision", "recall", "f1"],
            f"{task.name}: per-class test scores",
        )
        plots.plot_curves(
            tmp / "training.png",
            {
                "train loss": ([r["step"] for r in train], [r["train_loss"] for r in train]),
                "validation loss": (
                    [r["step"] for r in validation],
                    [r["val_loss"] for r in validation],
                ),
                f"validation {task.headline.label}": (
                    [r["step"] for r in validation],
                    [r["val_headline"] for r in validation],
                ),
            },
            title=f"{task.name}: fine-tuning",
        )
