"""Decoding word tag probabilities: constrained Viterbi over IOB2 transitions against argmax,
and entity F1 in strict IOB2 against conlleval's convention."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from emergent.errors import ConfigError
from emergent.tasks import TokenClassificationTask, Window
from emergent.tasks.decoding import allowed_transitions, decode, viterbi
from emergent.tasks.metrics import conlleval_f1, entity_metrics

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def well_formed(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_allowed_transitions_of_iob2() -> None:
    start, trans = allowed_transitions(LABELS)
    assert start.tolist() == [True, True, False, True, False]
    # into I-PER only from B-PER / I-PER; into I-LOC only from B-LOC / I-LOC
    assert trans[:, 2].tolist() == [False, True, True, False, False]
    assert trans[:, 4].tolist() == [False, False, False, True, True]
    assert trans[:, [0, 1, 3]].all()


def test_viterbi_repairs_an_ill_formed_argmax() -> None:
    # word 0: I-PER is likeliest but cannot start a sentence; B-PER I-PER (0.25 * 0.6 = 0.15)
    # beats O O (0.3 * 0.3 = 0.09) and O B-PER (0.3 * 0.1).
    probs = np.array(
        [
            [0.30, 0.25, 0.45, 0.0, 0.0],
            [0.30, 0.10, 0.60, 0.0, 0.0],
        ]
    )
    assert decode(probs, LABELS, "argmax").tolist() == [2, 2]
    assert decode(probs, LABELS, "viterbi").tolist() == [1, 2]


def test_viterbi_does_not_continue_an_entity_of_another_type() -> None:
    # argmax: B-PER then I-LOC; the best well-formed reading is B-LOC I-LOC
    # (0.4 * 0.7 = 0.28 beats B-PER O: 0.5 * 0.2 = 0.10 and B-PER B-LOC: 0.5 * 0.1)
    probs = np.array([[0.1, 0.5, 0.0, 0.4, 0.0], [0.2, 0.0, 0.0, 0.1, 0.7]])
    assert decode(probs, LABELS, "argmax").tolist() == [1, 4]
    assert decode(probs, LABELS, "viterbi").tolist() == [3, 4]


def test_viterbi_keeps_a_well_formed_argmax() -> None:
    probs = np.array([[0.1, 0.8, 0.1, 0, 0], [0.1, 0.1, 0.8, 0, 0], [0.9, 0, 0, 0.1, 0]])
    assert decode(probs, LABELS, "viterbi").tolist() == [1, 2, 0]


def test_viterbi_finds_the_best_well_formed_path_by_enumeration() -> None:
    rng = np.random.default_rng(0)
    start, trans = allowed_transitions(LABELS)
    for _ in range(20):
        log_probs = np.log(rng.dirichlet(np.ones(len(LABELS)) * 0.5, size=4))
        best = max(
            (
                path
                for path in itertools.product(range(len(LABELS)), repeat=4)
                if well_formed([LABELS[i] for i in path])
            ),
            key=lambda path: sum(log_probs[t, i] for t, i in enumerate(path)),
        )
        assert viterbi(log_probs, start, trans).tolist() == list(best)


def test_unknown_decoding_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tasks\.ner\.decoding"):
        TokenClassificationTask("ner", {"metric": "f1", "label": "F1"}, decoding="beam")


def test_served_entities_use_the_task_decoding() -> None:
    text = "Obama visited"
    # word 0 leans to I-PER (ill-formed at the start), word 1 is O
    probs = np.array([[0, 0, 0, 0, 0], [0.2, 0.35, 0.45, 0, 0], [0.9, 0.05, 0.05, 0, 0], [0] * 5])
    window = Window(probs, [None, 0, 1, None], [(0, 0), (0, 5), (6, 13), (0, 0)])
    headline = {"metric": "f1", "label": "F1"}
    viterbi_task = TokenClassificationTask("ner", headline, decoding="viterbi")
    argmax_task = TokenClassificationTask("ner", headline)
    (entity,) = viterbi_task.respond(text, [window], LABELS)["entities"]
    assert entity == {"type": "PER", "start": 0, "end": 5, "text": "Obama", "score": 0.35}
    # argmax emits I-PER at the start; the span reader (conlleval's convention) reads it
    # as a person with the I- tag's probability
    (loose,) = argmax_task.respond(text, [window], LABELS)["entities"]
    assert loose["score"] == 0.45


def test_strict_and_conlleval_f1_differ_on_ill_formed_tags() -> None:
    gold = [["B-PER", "I-PER", "O"], ["B-LOC", "O"]]
    pred = [["I-PER", "I-PER", "O"], ["B-LOC", "O"]]
    # strict IOB2: the I-PER run is no entity (1 predicted, 1 of 2 gold found: F1 2/3);
    # conlleval: it is PER(0, 1), so both gold entities are found (F1 1)
    assert entity_metrics(gold, pred)[0]["f1"] == pytest.approx(2 / 3)
    assert conlleval_f1(gold, pred) == pytest.approx(1.0)
    task = TokenClassificationTask("ner", {"metric": "f1", "label": "F1"})
    examples = [{"tokens": ["w"] * len(g), "tags": g} for g in gold]
    ids = [[LABELS.index(t) for t in p] for p in pred]
    scores = task.scores_from_counts(task.outcome_counts(examples, LABELS, ids).sum(0))
    assert float(scores["f1"]) == pytest.approx(2 / 3)
    assert float(scores["f1_conlleval"]) == pytest.approx(1.0)
    metrics = task.evaluate(examples, LABELS, ids, [[1.0] * len(g) for g in gold]).metrics
    assert metrics["f1"] == pytest.approx(2 / 3) and metrics["f1_conlleval"] == pytest.approx(1.0)
