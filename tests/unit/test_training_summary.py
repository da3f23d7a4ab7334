"""`models/<task>/training.json` through `TrainingSummary`: the same bytes the finetune stage
wrote as a dict (DVC and the integration tests read the file), and one line for a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emergent.errors import StageError
from emergent.models.summary import TRAINING_FILE, TrainingSummary

# The dict the finetune stage wrote before the class, in its key order.
WRITTEN = {
    "task": "ner",
    "headline": "f1",
    "max_length": 128,
    "best_val": 0.5,
    "best_step": 4,
    "global_step": 6,
    "world_size": 1,
    "num_nodes": 1,
    "epochs_completed": 2,
    "train_seconds": 1.25,
    "padding_share": 0.125,
    "real_tokens": 1000,
    "real_tokens_per_second": 800.0,
    "params_total": 100,
    "params_trainable": 90,
    "frozen_tensors": 3,
    "init": "pretrained",
    "strategy": "full",
    "pooling": None,
    "word_shapes": False,
    "mlflow_run_id": "abc",
    "history": {
        "train": [{"step": 1, "train_loss": 2.5}],
        "validation": [{"step": 4, "val_loss": 1.5, "val_f1": 0.5}],
    },
}


def test_save_writes_the_bytes_of_the_dict_it_replaces(tmp_path: Path) -> None:
    path = TrainingSummary(**WRITTEN).save(tmp_path)  # type: ignore[arg-type]
    assert path == tmp_path / TRAINING_FILE
    expected = json.dumps(WRITTEN, indent=2, ensure_ascii=False) + "\n"
    assert path.read_text(encoding="utf-8") == expected


def test_load_round_trips_and_answers_the_readers(tmp_path: Path) -> None:
    TrainingSummary(**WRITTEN).save(tmp_path)  # type: ignore[arg-type]
    loaded = TrainingSummary.load(tmp_path)
    assert loaded.max_length == 128 and loaded.mlflow_run_id == "abc"
    assert loaded.history["validation"][0]["val_f1"] == 0.5
    # a step comes back an int: the evaluate stage writes it into the plots' CSV, where a
    # float read "4.0" and changed the committed file on every run
    assert repr(loaded.history["validation"][0]["step"]) == "4"
    assert loaded.cost() == {
        "train_seconds": 1.25,
        "padding_share": 0.125,
        "real_tokens_per_second": 800.0,
    }
    assert list(loaded.logged()) == [
        "best_val",
        "best_step",
        "train_seconds",
        "padding_share",
        "real_tokens_per_second",
    ]
    assert "history" not in loaded.summary_line() and loaded.summary_line()["task"] == "ner"


def test_a_run_without_a_best_score_logs_no_best_figures(tmp_path: Path) -> None:
    summary = TrainingSummary(**{**WRITTEN, "best_val": None, "best_step": None})  # type: ignore[arg-type]
    assert "best_val" not in summary.logged() and "best_step" not in summary.logged()


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"training\.json is missing"):
        TrainingSummary.load(tmp_path)


def test_an_older_or_foreign_file_names_the_fields(tmp_path: Path) -> None:
    (tmp_path / TRAINING_FILE).write_text(
        json.dumps({**{k: v for k, v in WRITTEN.items() if k != "max_length"}, "extra": 1})
    )
    with pytest.raises(
        StageError,
        match=r"training\.json: field max_length: Field required \(and 1 more\); run the finetune",
    ):
        TrainingSummary.load(tmp_path)


def test_a_wrong_type_names_its_field(tmp_path: Path) -> None:
    (tmp_path / TRAINING_FILE).write_text(json.dumps({**WRITTEN, "global_step": "ten"}))
    with pytest.raises(StageError, match=r"field global_step: Input should be a valid integer"):
        TrainingSummary.load(tmp_path)


def test_broken_json_is_one_line_with_its_line(tmp_path: Path) -> None:
    (tmp_path / TRAINING_FILE).write_text('{\n  "task": ')
    with pytest.raises(StageError, match=r"training\.json: not valid JSON .*line 2"):
        TrainingSummary.load(tmp_path)
