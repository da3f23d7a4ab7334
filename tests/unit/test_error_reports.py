"""Error reports: the task says what a mistake is and how bad; `evaluation.mistakes` keeps the
worst, in that order."""

from __future__ import annotations

from emergent.evaluation.mistakes import worst
from emergent.tasks import SequenceClassificationTask, TokenClassificationTask

NER = TokenClassificationTask("ner", {"metric": "f1", "label": "entity F1"})
SENT = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "accuracy"})
TAGS = ["O", "B-PER", "I-PER"]


def sentence(tokens: str, tags: str) -> dict:
    return {"tokens": tokens.split(), "tags": tags.split()}


def test_sentences_with_most_wrong_words_first_then_least_confident() -> None:
    examples = [
        sentence("Ann ran", "B-PER O"),  # right
        sentence("Bob and Cy", "B-PER O B-PER"),  # one wrong word, confidence 0.6
        sentence("Dee met Eve", "B-PER O B-PER"),  # two wrong words
        sentence("Fay sat", "B-PER O"),  # one wrong word, confidence 0.3
    ]
    pred = [[1, 0], [1, 0, 0], [0, 0, 2], [0, 0]]
    conf = [[0.9, 0.9], [0.9, 0.8, 0.6], [0.7, 0.9, 0.5], [0.3, 0.99]]
    rows = worst(NER, examples, TAGS, pred, conf, limit=10)
    assert [r["index"] for r in rows] == [2, 3, 1]
    assert rows[0]["errors"] == 2
    assert rows[0]["mistakes"] == [
        {"token": "Dee", "gold": "B-PER", "pred": "O"},
        {"token": "Eve", "gold": "B-PER", "pred": "I-PER"},
    ]
    assert rows[1]["min_confidence"] == 0.3
    assert [r["index"] for r in worst(NER, examples, TAGS, pred, conf, limit=2)] == [2, 3]


def test_misclassified_texts_most_confidently_wrong_first() -> None:
    labels = ["negative", "positive"]
    examples = [
        {"text": "fine", "label": "positive"},
        {"text": "awful", "label": "negative"},
        {"text": "meh", "label": "negative"},
    ]
    pred = [[1], [1], [1]]
    conf = [[0.1, 0.9], [0.05, 0.95], [0.4, 0.6]]
    rows = worst(SENT, examples, labels, pred, conf, limit=5)
    assert [(r["index"], r["confidence"]) for r in rows] == [(1, 0.95), (2, 0.6)]
    assert rows[0]["gold"] == "negative" and rows[0]["pred"] == "positive"
    assert rows[0]["probabilities"] == {"negative": 0.05, "positive": 0.95}
