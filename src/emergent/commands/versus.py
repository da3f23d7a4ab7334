"""Command `versus` (`python -m emergent versus task=sentiment 'versus.models=[A, B]'`):
fine-tuned models side by side on the same texts of one split, each headline with its
bootstrap interval and each model's difference from the first with a *paired* interval.

Why: two runs' own intervals overlap long after one model is reliably better, because most of
their width is which texts the split happens to hold, and that is shared. Resampling the same
texts for both models cancels it (SmolLM2 against MiniLM on sentiment: intervals of ±2 points
each, a paired difference of +4.0 [+1.9, +6.0]). Model folders are `models/<task>` folders made
by `finetune` (absolute, or relative to the inputs: `paths.input_dir` or the project root).
Writes `reports/<task>/versus.json` into the run folder and prints a table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import load_task_split
from emergent.errors import ConfigError
from emergent.evaluation.bootstrap import Bootstrap, drop_interval, headline_interval
from emergent.evaluation.predict import predict, torch_forward
from emergent.io import write_json
from emergent.models.finetuned import load_finetuned
from emergent.models.summary import TrainingSummary
from emergent.schema import Settings
from emergent.stages.per_task import per_task
from emergent.tasks import Task

log = logging.getLogger(__name__)


def side_by_side(
    task: Task,
    examples: Sequence[dict],
    labels: Sequence[str],
    predictions: Mapping[str, tuple[Sequence[Sequence[int]], Sequence[Any]]],
    bootstrap: Bootstrap,
) -> list[dict[str, Any]]:
    """Per model (the first is the reference): its headline in points with its interval, and
    its gain over the reference (positive = better, whichever way the metric points) with the
    paired interval; the reference's own gain is 0 [0, 0]."""
    reference = next(iter(predictions.values()))[0]
    rows: list[dict[str, Any]] = []
    for name, (pred, conf) in predictions.items():
        points = task.headline.points(task.evaluate(examples, labels, pred, conf).metrics)
        low, high = headline_interval(task, examples, labels, pred, bootstrap)
        drop_low, drop_high = drop_interval(task, examples, labels, reference, pred, bootstrap)
        first = rows[0][task.headline.metric] if rows else points
        rows.append(
            {
                "model": name,
                task.headline.metric: points,
                "interval": [100.0 * low, 100.0 * high],
                "gain": 0.0 - task.headline.drop(first, points),  # 0.0 -: no -0.0 for the first
                "paired_interval": [0.0 - drop_high, 0.0 - drop_low],
            }
        )
    return rows


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task, *, settings: Settings) -> None:
    section = settings.versus
    if len(section.models) < 2:
        raise ConfigError(
            "versus.models",
            "needs two fine-tuned model folders or more (the first is the reference)",
        )
    examples = load_task_split(paths.inp(settings.data.prepared_dir), task.name, section.split)
    predictions: dict[str, Any] = {}
    labels: list[str] | None = None
    for folder in section.models:
        directory = paths.input_dir / folder  # an absolute folder stays itself
        summary = TrainingSummary.load(directory)  # one line where there is no fine-tune
        if summary.task != task.name:
            raise ConfigError(
                "versus.models", f"{folder} was fine-tuned for {summary.task}, not {task.name}"
            )
        model, tokenizer, own_labels = load_finetuned(task, directory)
        if labels is not None and own_labels != labels:
            raise ConfigError(
                "versus.models",
                f"{folder} predicts labels {own_labels}, the first model {labels}: not comparable",
            )
        labels = own_labels
        window = summary.max_length
        forward = torch_forward(model)
        decoded = task.for_model(model.config)  # as this model learned to decode (CRF scores)
        predictions[folder] = predict(decoded, forward, tokenizer, examples, labels, window)
        log.info(
            "versus %s: %s predicted %d %s texts", task.name, folder, len(examples), section.split
        )
        del model
    assert labels is not None
    rows = side_by_side(task, examples, labels, predictions, Bootstrap.from_settings(settings))
    write_json(
        paths.out("reports", task.name, "versus.json"),
        {"task": task.name, "split": section.split, "n_examples": len(examples), "models": rows},
    )
    metric = task.headline.metric
    print(f"{task.name}, {section.split} split ({len(examples)} examples), {metric} in points:")
    for row in rows:
        low, high = row["interval"]
        line = f"  {row[metric]:6.2f} [{low:.2f}, {high:.2f}]  {row['model']}"
        if row is not rows[0]:
            d_low, d_high = row["paired_interval"]
            line += f"  gain {row['gain']:+.2f}, paired [{d_low:+.2f}, {d_high:+.2f}]"
        print(line)
