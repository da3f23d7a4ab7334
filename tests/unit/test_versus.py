"""`versus`: fine-tuned models side by side on the same texts, gains with paired intervals."""

from __future__ import annotations

from pathlib import Path

import pytest

from emergent.commands.versus import side_by_side
from emergent.config import Paths
from emergent.errors import ConfigError, StageError
from emergent.evaluation.bootstrap import Bootstrap
from emergent.models.summary import TrainingSummary
from emergent.stages import run_stage
from emergent.tasks import SequenceClassificationTask
from tests.conftest import smoke_cfg

SENTIMENT = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "Accuracy"})
LABELS = ["negative", "positive"]


def _predictions(gold: list[int], right: set[int]) -> tuple[list[list[int]], list[float]]:
    """Predicted label ids: gold where the index is in `right`, the other label elsewhere."""
    return [[g if i in right else 1 - g] for i, g in enumerate(gold)], [0.9] * len(gold)


def test_gains_over_the_first_model_with_paired_intervals() -> None:
    gold = [0, 1] * 10
    examples = [{"text": f"t{i}", "label": LABELS[g]} for i, g in enumerate(gold)]
    reference = _predictions(gold, set(range(12)))  # 12 of 20 right
    better = _predictions(gold, set(range(18)))  # the same 12 and 6 more
    worse = _predictions(gold, set(range(6)))  # 6 of the reference's 12
    rows = side_by_side(
        SENTIMENT,
        examples,
        LABELS,
        {"ref": reference, "better": better, "worse": worse},
        Bootstrap(resamples=500, seed=0),
    )
    assert [(r["model"], r["accuracy"], r["gain"]) for r in rows] == [
        ("ref", 60.0, 0.0),
        ("better", 90.0, 30.0),
        ("worse", 30.0, -30.0),
    ]
    assert rows[0]["paired_interval"] == [0.0, 0.0]
    # the better model is right wherever the reference is: no resample shows a loss
    low, high = rows[1]["paired_interval"]
    assert 0.0 <= low < 30.0 < high
    low, high = rows[2]["paired_interval"]
    assert low < -30.0 < high <= 0.0
    # their own intervals overlap; the paired one never reaches below zero
    assert rows[1]["interval"][0] < rows[0]["interval"][1]


def test_versus_needs_two_models_naming_the_key(tmp_path: Path) -> None:
    for models in ("[]", "[models/sentiment]"):
        cfg = smoke_cfg(f"versus.models={models}", tmp=tmp_path)
        with pytest.raises(ConfigError, match=r"^versus\.models: needs two"):
            run_stage("versus", cfg, Paths(tmp_path, tmp_path / "out"), task="sentiment")


def test_folders_without_a_fine_tune_of_the_task_are_one_line(
    prepared_smoke: Path, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared_smoke)
    cfg = smoke_cfg("versus.models=[models/sentiment,models/other]", tmp=tmp_path)
    paths = Paths(tmp_path, tmp_path / "out")
    with pytest.raises(StageError, match=r"models/sentiment/training\.json is missing"):
        run_stage("versus", cfg, paths, task="sentiment")
    # a NER model named for a sentiment comparison (its head would load re-initialised)
    ner = TrainingSummary(
        task="ner", headline="f1", max_length=64, best_val=None, best_step=None,
        global_step=1, world_size=1, num_nodes=1, epochs_completed=1, train_seconds=1.0,
        padding_share=0.0, real_tokens=1, real_tokens_per_second=1.0, params_total=1,
        params_trainable=1, frozen_tensors=0, init="pretrained", strategy="full", pooling=None,
        word_shapes=False, mlflow_run_id=None,
    )  # fmt: skip
    ner.save(tmp_path / "models" / "sentiment")
    with pytest.raises(
        ConfigError, match=r"^versus\.models: models/sentiment was fine-tuned for ner"
    ):
        run_stage("versus", cfg, paths, task="sentiment")
    assert not (tmp_path / "out" / "reports").exists()
