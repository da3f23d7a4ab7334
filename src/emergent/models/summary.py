"""What a fine-tune leaves beside its model: `models/<task>/training.json`, as one typed record.

The finetune stage writes it; evaluate, export, seeds, tune and the benchmarks read it. One class
with the file name, the fields and their order keeps writers and readers agreeing (the file is
byte-identical to the dict it replaces: DVC and tests read it). Pure Python, so a stage that only
scores a model reads it without importing Lightning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter

from emergent.errors import StageError
from emergent.io import read_record, write_json

TRAINING_FILE = "training.json"

# What training cost: the evaluate report and MLflow carry them, not DVC's metrics (timings
# differ on every run and machine, and as metrics they crowd `dvc exp show`).
COST_FIGURES = ("train_seconds", "padding_share", "real_tokens_per_second")
# The figures the finetune run logs to MLflow as metrics.
LOGGED_FIGURES = (
    "best_val",
    "best_step",
    "train_seconds",
    "padding_share",
    "real_tokens_per_second",
)


@dataclass
class TrainingSummary:
    """One fine-tune run: its task, window, best validation score, cost and history."""

    # Read back strictly: unknown keys, missing keys and wrong types are refused in one line.
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True)

    task: str
    headline: str
    max_length: int  # evaluate and export encode with the same window
    best_val: float | None
    best_step: int | None
    global_step: int
    world_size: int
    num_nodes: int
    epochs_completed: int
    train_seconds: float
    padding_share: float
    real_tokens: int
    real_tokens_per_second: float
    params_total: int
    params_trainable: int
    frozen_tensors: int
    init: str
    strategy: str
    pooling: str | None
    word_shapes: bool
    mlflow_run_id: str | None
    # int | float: a step stays an int (the plots' CSV step column reads 115, not 115.0)
    history: dict[str, list[dict[str, int | float]]] = field(default_factory=dict)

    def save(self, folder: Path) -> Path:
        """Write `folder/training.json` atomically; returns its path."""
        path = Path(folder) / TRAINING_FILE
        write_json(path, dataclasses.asdict(self))
        return path

    @classmethod
    def load(cls, folder: Path) -> TrainingSummary:
        """The summary in `folder`, or one line naming the file and what is wrong with it."""
        path = Path(folder) / TRAINING_FILE
        if not path.is_file():
            raise StageError(f"{path} is missing: run the finetune stage for this model first")
        return read_record(path, _ADAPTER, "a training summary", "run the finetune stage again")

    def summary_line(self) -> dict[str, Any]:
        """Every field but the history (the finetune stage's closing log line)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "history"}

    def cost(self) -> dict[str, float]:
        """What training cost (COST_FIGURES), the figures a run recorded."""
        return self._figures(COST_FIGURES)

    def logged(self) -> dict[str, float]:
        """The figures the finetune run logs to MLflow (LOGGED_FIGURES), the ones it has."""
        return self._figures(LOGGED_FIGURES)

    def _figures(self, names: tuple[str, ...]) -> dict[str, float]:
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


_ADAPTER = TypeAdapter(TrainingSummary)
