"""Stage `evaluate@{task}`: test-split metrics, plots, error report, logged to MLflow.

Headline figures go to `metrics/<task>.json` (what `dvc metrics show` prints); per-class
scores, the confusion matrix, the training cost and the worst errors go to `reports/<task>/`.
Outside DVC, `python -m emergent evaluate task=ner data.ner.test=<file>` evaluates the trained
model on any CoNLL/JSONL/CSV file without retraining.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import SPLITS, load_task_split, manifest_path
from emergent.data.prepare import read_task_file
from emergent.evaluation.bootstrap import Bootstrap
from emergent.evaluation.predict import torch_forward
from emergent.evaluation.report import score_test, write_report, write_task_plots
from emergent.io import sha256_file, write_json
from emergent.models.finetuned import load_finetuned
from emergent.models.summary import TrainingSummary
from emergent.schema import Settings
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tracking import stage_run

log = logging.getLogger(__name__)

PREPARED_TEST = "prepared test split"


def test_examples(settings: Settings, paths: Paths, task: Task) -> tuple[list[dict], str]:
    """The prepared test split; in a CLI run with `data.<task>.test` set, that file instead."""
    data = settings.data.task(task.name)
    if not paths.is_dvc and data.test:
        examples, _ = read_task_file(task, data.test, data, paths.input_dir)
        return examples, data.test
    prepared = paths.inp(settings.data.prepared_dir)
    return load_task_split(prepared, task.name, "test"), PREPARED_TEST


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task, *, settings: Settings) -> None:
    model_dir = paths.inp("models", task.name)
    model, tokenizer, labels = load_finetuned(task, model_dir)
    task = task.for_model(model.config)  # decode as the model learned to (CRF scores)
    examples, source = test_examples(settings, paths, task)
    training = TrainingSummary.load(model_dir)
    prepared = paths.inp(settings.data.prepared_dir)
    manifest = manifest_path(prepared)
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
        settings=settings,
    ) as tracker:
        scores = score_test(
            task,
            torch_forward(model),
            tokenizer,
            labels,
            examples,
            training.max_length,
            Bootstrap.from_settings(settings),
        )
        cost = training.cost()  # to the report and MLflow, not to DVC's metrics
        write_json(paths.out("metrics", f"{task.name}.json"), scores.metrics)
        write_task_plots(paths.out("plots", task.name), task, scores.result, training.history)
        write_report(paths.out("reports", task.name), task, scores, cost)
        tracker.log_metrics({f"test_{k}": v for k, v in {**scores.metrics, **cost}.items()})
        tracker.log_metrics(scores.per_class_f1())
        if source == PREPARED_TEST:
            # One row per trained model in the task's experiment: config, validation AND test
            # figures and the data lineage on the training run, so runs compare in one view.
            tracker.log_datasets(prepared, task.name, ["test"])
            tracker.log_to_run(
                training.mlflow_run_id,
                {f"test_{k}": v for k, v in scores.metrics.items()},
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
            task.headline.value(scores.metrics),
        )
