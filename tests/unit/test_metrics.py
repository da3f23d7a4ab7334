"""Metric values on hand-checked inputs."""

from __future__ import annotations

import pytest

from emergent.evaluation.metrics import classification_metrics, ner_metrics
from emergent.evaluation.predict import align_to_words, score


def test_ner_entity_level_strict_iob2() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]
    m = ner_metrics(gold, pred)
    # gold entities: PER, LOC, ORG (3); predicted: PER, ORG(pos 3); strict IOB2 drops the
    # lone I-ORG. Correct: PER only -> P = 1/2, R = 1/3.
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(0.4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert m["per_type"]["LOC"]["recall"] == 0.0


def test_ner_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        ner_metrics([["O", "O"]], [["O"]])


def test_classification_metrics_macro_and_confusion() -> None:
    m = classification_metrics([0, 0, 0, 1, 1], [0, 0, 1, 1, 0], ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["per_class"]["neg"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["pos"]["recall"] == pytest.approx(0.5)
    f1_neg = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    f1_pos = 2 * 0.5 * 0.5 / 1.0
    assert m["f1_macro"] == pytest.approx((f1_neg + f1_pos) / 2)
    assert m["confusion_matrix"]["matrix"] == [[2, 1], [1, 1]]


def test_score_headline_and_truncated_words_count_as_outside() -> None:
    labels = ["O", "B-PER", "I-PER"]
    padded = align_to_words([[1, 2, 0]], [[1]])
    assert padded == [[1, 0, 0]]
    result = score("ner", labels, [[1, 2, 0]], padded)
    assert result["headline"] == result["f1"] == 0.0
    assert score("sentiment", ["a", "b"], [[0], [1]], [[0], [1]])["headline"] == 1.0
