"""Metric values on hand-checked inputs."""

from __future__ import annotations

import pytest

from emergent.tasks import Headline
from emergent.tasks.metrics import classification_metrics, entity_metrics


def test_entity_level_strict_iob2() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]
    m, per_type = entity_metrics(gold, pred)
    # gold entities: PER, LOC, ORG (3); predicted: PER, ORG(pos 3); strict IOB2 drops the
    # lone I-ORG. Correct: PER only -> P = 1/2, R = 1/3.
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(0.4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert per_type["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert per_type["LOC"]["recall"] == 0.0


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_metrics([["O", "O"]], [["O"]])


def test_classification_metrics_macro_and_confusion() -> None:
    gold = ["neg", "neg", "neg", "pos", "pos"]
    pred = ["neg", "neg", "pos", "pos", "neg"]
    m, per_class, confusion = classification_metrics(gold, pred, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert per_class["neg"]["precision"] == pytest.approx(2 / 3)
    assert per_class["pos"]["recall"] == pytest.approx(0.5)
    # neg: P = R = 2/3 -> F1 2/3; pos: P = R = 1/2 -> F1 1/2
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert confusion["matrix"] == [[2, 1], [1, 1]]


def test_headline_direction_decides_improvement_and_drop() -> None:
    up = Headline("f1", "F1", "max")
    down = Headline("loss", "loss", "min")
    assert up.improved(0.5, 0.4) and not up.improved(0.4, 0.5) and up.improved(0.1, None)
    assert down.improved(0.4, 0.5) and not down.improved(0.5, 0.4)
    assert up.drop(80.0, 79.0) == 1.0 and down.drop(1.0, 1.5) == 0.5
    assert up.points({"f1": 0.4661}) == pytest.approx(46.61)
    with pytest.raises(ValueError, match=r"headline\.mode"):
        Headline("f1", "F1", "up")
