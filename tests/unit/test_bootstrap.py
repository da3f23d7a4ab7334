"""Bootstrap intervals of test figures: the counts behind each headline metric, the interval
of one model's figure and the paired interval of a drop between two models."""

from __future__ import annotations

import pytest

from emergent.evaluation.bootstrap import Bootstrap, drop_interval, headline_interval
from emergent.tasks import SequenceClassificationTask, TokenClassificationTask
from emergent.tasks.metrics import classification_metrics, entity_metrics

NER = TokenClassificationTask("ner", {"metric": "f1", "label": "entity F1"})
SENT = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "accuracy"})
DEBATE = SequenceClassificationTask("debate", {"metric": "f1_macro", "label": "macro F1"})
TAGS = ["O", "B-person", "I-person", "B-geo-loc"]
SETTINGS = Bootstrap(resamples=2000, confidence=0.95, seed=0)


def tag_ids(tags: list[str]) -> list[int]:
    return [TAGS.index(t) for t in tags]


def test_entity_counts_give_seqeval_micro_f1() -> None:
    gold = [["B-person", "I-person", "O", "B-geo-loc"], ["O", "B-person"], ["O", "O"]]
    # sentence 0: the person found, the place missed; sentence 1: a wrong span type;
    # sentence 2: a spurious place (strict IOB2: an I- without B- is no entity).
    pred = [["B-person", "I-person", "O", "O"], ["O", "B-geo-loc"], ["B-geo-loc", "I-person"]]
    examples = [{"tokens": ["w"] * len(t), "tags": t} for t in gold]
    counts = NER.outcome_counts(examples, TAGS, [tag_ids(p) for p in pred])
    # columns: tp, predicted, gold, correct words, words, then tp, predicted, gold in
    # conlleval's convention (sentence 2's `I-person` after `B-geo-loc` starts a person there)
    assert counts.tolist() == [
        [1, 1, 2, 3, 4, 1, 1, 2],
        [0, 1, 1, 1, 2, 0, 1, 1],
        [0, 1, 0, 0, 2, 0, 2, 0],
    ]
    f1 = float(NER.headline_from_counts(counts.sum(0)))
    assert f1 == pytest.approx(2 * 1 / (3 + 3))
    assert f1 == pytest.approx(entity_metrics(gold, pred)[0]["f1"])


@pytest.mark.parametrize("task", [SENT, DEBATE])
def test_label_counts_give_scikit_learn_figures(task: SequenceClassificationTask) -> None:
    labels = ["a", "b", "c"]
    gold = ["a", "a", "b", "c", "c", "c", "zzz"]  # a gold label the model does not know
    pred = ["a", "b", "b", "c", "a", "a", "c"]
    examples = [{"text": "t", "label": g} for g in gold]
    ids = [[labels.index(p)] for p in pred]
    value = float(task.headline_from_counts(task.outcome_counts(examples, labels, ids).sum(0)))
    expected = classification_metrics(gold, pred, labels)[0][task.headline.metric]
    assert value == pytest.approx(expected)
    # per label [tp, predicted, gold]: a [1, 3, 2], b [1, 2, 1], c [1, 2, 3]; F1 = 2tp / (p + g)
    by_hand = {"accuracy": 3 / 7, "f1_macro": (2 / 5 + 2 / 3 + 2 / 5) / 3}
    assert value == pytest.approx(by_hand[task.headline.metric])
    # a kind without interval metrics scores its headline alone from the same counts
    scores = task.scores_from_counts(task.outcome_counts(examples, labels, ids).sum(0))
    assert list(scores) == [task.headline.metric]
    assert float(scores[task.headline.metric]) == pytest.approx(by_hand[task.headline.metric])


def test_interval_of_an_accuracy_matches_the_binomial_width() -> None:
    # 400 texts, every other one right: accuracy 0.5, standard error sqrt(0.25 / 400) = 0.025,
    # so a 95% interval spans about 2 * 1.96 * 0.025 = 0.098 around 0.5.
    examples = [{"text": "t", "label": "pos"} for _ in range(400)]
    pred = [[i % 2] for i in range(400)]  # 0 = neg (wrong), 1 = pos (right)
    low, high = headline_interval(SENT, examples, ["neg", "pos"], pred, SETTINGS)
    assert low < 0.5 < high
    assert 0.085 < high - low < 0.11


def test_paired_drop_interval_is_tight_where_the_models_agree() -> None:
    # The candidate breaks 30 of the reference's 150 right answers and fixes none: a drop of
    # 15 points whose resamples can only vary with the share of those 30, so the paired
    # interval stays above 0 and is narrower than either model's own interval.
    examples = [{"text": "t", "label": "pos"} for _ in range(200)]
    reference = [[1] if i % 4 else [0] for i in range(200)]  # 150 right
    candidate = [[0] if i < 40 and i % 4 else r for i, r in enumerate(reference)]
    assert sum(r != c for r, c in zip(reference, candidate, strict=True)) == 30
    labels = ["neg", "pos"]
    low, high = drop_interval(SENT, examples, labels, reference, candidate, SETTINGS)
    assert 0.0 < low < 15.0 < high < 25.0
    own_low, own_high = headline_interval(SENT, examples, labels, reference, SETTINGS)
    assert (own_high - own_low) * 100 > high - low
    same = drop_interval(SENT, examples, labels, reference, reference, SETTINGS)
    assert same == (0.0, 0.0)


def test_a_headline_without_counts_is_a_clear_error() -> None:
    task = SequenceClassificationTask("x", {"metric": "auroc", "label": "AUROC"})
    counts = task.outcome_counts([{"text": "t", "label": "a"}], ["a", "b"], [[0]])
    with pytest.raises(ValueError, match=r"headline.metric 'auroc' has no bootstrap interval"):
        task.headline_from_counts(counts.sum(0))
