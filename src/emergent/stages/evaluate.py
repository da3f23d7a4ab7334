"""Stage `evaluate@{task}`: test-split metrics, plots, error report, logged to MLflow.

Headline figures go to `metrics/<task>.json` (what `dvc metrics show` prints); per-class
scores, the confusion matrix, the training cost and the worst errors go to `reports/<task>/`.
Outside DVC, `python -m emergent evaluate task=ner data.ner.test=<file>` evaluates the trained
model on any CoNLL/JSONL/CSV file without retraining.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import SPLITS, load_task_split, manifest_path
from emergent.data.prepare import read_task_file
from emergent.evaluation import errors, plots
from emergent.evaluation.bootstrap import Bootstrap, headline_interval, interval
from emergent.evaluation.predict import predict, torch_forward
from emergent.io import atomic_dir, sha256_file, write_json, write_jsonl
from emergent.models.finetuned import load_finetuned
from emergent.models.summary import TrainingSummary
from emergent.stages.per_task import per_task
from emergent.tasks import Evaluation, Task
from emergent.tracking import stage_run

log = logging.getLogger(__name__)

PREPARED_TEST = "prepared test split"


def test_examples(cfg: DictConfig, paths: Paths, task: Task) -> tuple[list[dict], str]:
    """The prepared test split; in a CLI run with `data.<task>.test` set, that file instead."""
    source = cfg.data[task.name].get("test")
    if not paths.is_dvc and source:
        examples, _ = read_task_file(task, str(source), cfg.data[task.name], paths.input_dir)
        return examples, str(source)
    prepared = paths.inp(cfg.data.prepared_dir)
    return load_task_split(prepared, task.name, "test"), PREPARED_TEST


def headline_bounds(
    cfg: DictConfig, task: Task, examples: list[dict], labels: list[str], pred: list
) -> dict[str, float]:
    """`<metric>_ci_low/_ci_high`: the bootstrap interval of the headline, and of the other
    metrics a task names in `interval_metrics` (NER: strict and conlleval F1), over the same
    resamples (none for fewer than two examples, where resampling says nothing)."""
    if len(examples) < 2:
        return {}
    settings = Bootstrap.from_config(cfg)
    low, high = headline_interval(task, examples, labels, pred, settings)
    bounds = {f"{task.headline.metric}_ci_low": low, f"{task.headline.metric}_ci_high": high}
    extra = [m for m in task.interval_metrics if m != task.headline.metric]
    if extra:
        counts = task.outcome_counts(examples, labels, pred)
        for metric in extra:
            low, high = interval(
                lambda t, m=metric: task.scores_from_counts(t)[m], [counts], settings
            )
            bounds |= {f"{metric}_ci_low": low, f"{metric}_ci_high": high}
    return bounds


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task) -> None:
    model_dir = paths.inp("models", task.name)
    model, tokenizer, labels = load_finetuned(task, model_dir)
    task = task.for_model(model.config)  # decode as the model learned to (CRF scores)
    examples, source = test_examples(cfg, paths, task)
    training = TrainingSummary.load(model_dir)
    max_length = training.max_length
    manifest = manifest_path(paths.inp(cfg.data.prepared_dir))
    with stage_run(
        cfg,
        "evaluate",
        task.name,
        data_sha256=sha256_file(manifest) if manifest.is_file() else "",
        extra_tags={
            "task": task.name,
            "finetune_run_id": training.mlflow_run_id,
            "test_source": source,
        },
    ) as tracker:
        pred, conf = predict(task, torch_forward(model), tokenizer, examples, labels, max_length)
        result = task.evaluate(examples, labels, pred, conf)
        metrics = {
            **result.metrics,
            **headline_bounds(cfg, task, examples, labels, pred),
            "n_examples": len(examples),
        }
        cost = training.cost()  # to the report and MLflow, not to DVC's metrics
        write_json(paths.out("metrics", f"{task.name}.json"), metrics)
        write_task_plots(paths, task, result, training)
        with atomic_dir(paths.out("reports", task.name)) as tmp:
            worst = errors.worst(task, examples, labels, pred, conf, task.errors_kept)
            write_jsonl(tmp / "errors.jsonl", worst)
            write_json(
                tmp / "details.json",
                {
                    "metrics": metrics,
                    "training": cost,
                    "per_class": result.per_class,
                    "confusion": result.confusion,
                },
            )
        tracker.log_metrics({f"test_{k}": v for k, v in {**metrics, **cost}.items()})
        tracker.log_metrics(
            {
                f"test_{name}_{key}": value
                for name, scores in result.per_class.items()
                for key, value in scores.items()
                if key == "f1"
            }
        )
        if source == PREPARED_TEST:
            # One row per trained model in the task's experiment: config, validation AND test
            # figures and the data lineage on the training run, so runs compare in one view.
            prepared = paths.inp(cfg.data.prepared_dir)
            tracker.log_datasets(prepared, task.name, ["test"])
            tracker.log_to_run(
                training.mlflow_run_id,
                {f"test_{k}": v for k, v in metrics.items()},
                tags={"evaluate_run_id": tracker.run_id},
                splits=(prepared, task.name, SPLITS),
            )
        tracker.log_artifact(paths.out("plots", task.name), "plots")
        tracker.log_artifact(paths.out("reports", task.name), "reports")
        log.info(
            "evaluate %s on %s (%d examples): %s %.4f",
            task.name,
            source,
            len(examples),
            task.headline.label,
            task.headline.value(metrics),
        )


def write_task_plots(
    paths: Paths, task: Task, result: Evaluation, training: TrainingSummary
) -> None:
    """DVC plot data (confusion rows, per-class scores, training curves) and PNG figures."""
    labels, matrix = result.confusion["labels"], result.confusion["matrix"]
    history = training.history
    headline = f"val_{task.headline.metric}"
    with atomic_dir(paths.out("plots", task.name)) as tmp:
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
        plots.write_csv(tmp / "train.csv", history.get("train", []), ["step", "train_loss"])
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
        train = history.get("train", [])
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
