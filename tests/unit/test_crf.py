"""The CRF layer over word tags: its likelihood against enumeration of every path, learned
scores in decoding, and the task bound to a model's scores (evaluation, package, server)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emergent.errors import ConfigError
from emergent.models.classifier import TaskModule, task_module
from emergent.models.crf import TagTransitions, crf_nll
from emergent.schema import FinetuneShared
from emergent.tasks import SequenceClassificationTask, TokenClassificationTask, task_from_spec
from emergent.tasks.decoding import CONFIG_KEY, decode
from tests.conftest import smoke_settings

LABELS = ["O", "B-PER", "I-PER"]
HEADLINE = {"metric": "f1", "label": "F1"}


def path_score(path, emissions, start, transitions, end) -> torch.Tensor:
    score = start[path[0]] + emissions[0, path[0]] + end[path[-1]]
    for t in range(1, len(path)):
        score = score + transitions[path[t - 1], path[t]] + emissions[t, path[t]]
    return score


def test_nll_is_log_partition_minus_gold_score_by_enumeration() -> None:
    torch.manual_seed(0)
    n = 3
    start, transitions, end = torch.randn(n), torch.randn(n, n), torch.randn(n)
    logits = torch.randn(2, 5, n)
    # row 0: words at positions 1, 3, 4 (2 is a later sub-token, 0 [CLS]); row 1: one word
    labels = torch.tensor([[-100, 0, -100, 2, 1], [1, -100, -100, -100, -100]])
    expected = 0.0
    for emissions, gold in ((logits[0, [1, 3, 4]], [0, 2, 1]), (logits[1, [0]], [1])):
        every = [
            path_score(p, emissions, start, transitions, end)
            for p in itertools.product(range(n), repeat=len(gold))
        ]
        log_z = torch.logsumexp(torch.stack(every), 0)
        expected += float(log_z - path_score(gold, emissions, start, transitions, end))
    got = crf_nll(logits, labels, start, transitions, end)
    assert got.item() == pytest.approx(expected / 4, rel=1e-5)  # four labelled words


def test_with_zero_scores_the_nll_is_the_per_word_cross_entropy() -> None:
    # No transition scores: the chain factorises, so the sentence likelihood is the product
    # of per-word softmax probabilities (what the plain token classifier trains on).
    torch.manual_seed(1)
    logits, labels = torch.randn(2, 4, 3), torch.tensor([[0, 1, -100, 2], [2, -100, -100, -100]])
    layer = TagTransitions(3)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1))
    assert layer.nll(logits, labels).item() == pytest.approx(ce.item(), rel=1e-5)


def test_rows_without_a_labelled_word_are_skipped_and_gradients_reach_the_scores() -> None:
    layer = TagTransitions(3)
    logits = torch.zeros(2, 3, 3, requires_grad=True)
    labels = torch.tensor([[-100, -100, -100], [0, 1, 2]])
    loss = layer.nll(logits, labels)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(3.0), rel=1e-5)  # uniform: log 3 per word
    assert layer.transitions.grad is not None and layer.transitions.grad.abs().sum() > 0
    assert logits.grad is not None and logits.grad[0].abs().sum() == 0


def test_scores_round_trip_through_plain_lists() -> None:
    layer = TagTransitions(3)
    with torch.no_grad():
        layer.transitions[1, 2] = 2.5
        layer.end[0] = -1.0
    again = TagTransitions(3, layer.as_dict())
    assert again.as_dict() == layer.as_dict()
    assert again.as_dict()["transitions"][1][2] == 2.5


def test_learned_transition_scores_change_the_decoded_path() -> None:
    # word 0: B-PER; word 1: O (0.55) over I-PER (0.30). The masks alone keep B-PER O;
    # a learned B-PER -> I-PER score of +2 (e^2 * 0.30 = 2.2 > 0.55) makes it one entity.
    probs = np.array([[0.3, 0.7, 0.0], [0.55, 0.15, 0.30]])
    assert decode(probs, LABELS, "viterbi").tolist() == [1, 0]
    zero = {"start": [0.0] * 3, "transitions": [[0.0] * 3 for _ in range(3)], "end": [0.0] * 3}
    assert decode(probs, LABELS, "viterbi", zero).tolist() == [1, 0]
    learned = {**zero, "transitions": [[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]}
    assert decode(probs, LABELS, "viterbi", learned).tolist() == [1, 2]
    # the IOB2 masks still hold: no learned score lets I-PER start a sentence
    eager = {**learned, "start": [0.0, 0.0, 50.0]}
    assert decode(probs, LABELS, "viterbi", eager).tolist()[0] != 2
    # an end score steers the last tag
    ending = {**zero, "end": [-5.0, 0.0, 0.0]}
    assert decode(probs, LABELS, "viterbi", ending).tolist() == [1, 2]


def test_the_task_decodes_as_the_model_learned_and_the_package_carries_it() -> None:
    scores = {
        "start": [0.0] * 3,
        "transitions": [[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]],
        "end": [0.0] * 3,
    }
    task = TokenClassificationTask("ner", HEADLINE, decoding="viterbi")
    probs = [np.array([[0.3, 0.7, 0.0], [0.55, 0.15, 0.30]])]
    assert task.for_model(SimpleNamespace()) is task  # a model without a CRF
    bound = task.for_model(SimpleNamespace(**{CONFIG_KEY: scores}))
    assert bound.decode_words(probs, LABELS)[0] == [[1, 2]]
    assert task.decode_words(probs, LABELS)[0] == [[1, 0]]  # the config's task is untouched
    # an export package's task definition: the server rebuilds the bound task from it
    spec = {
        "_target_": "emergent.tasks.TokenClassificationTask",
        "name": "ner",
        "headline": HEADLINE,
        "decoding": "viterbi",
        **bound.model_spec(),
    }
    assert task_from_spec(spec).decode_words(probs, LABELS)[0] == [[1, 2]]
    assert task.model_spec() == {}


def module_config(**overrides: object) -> FinetuneShared:
    """Smoke's NER fine-tuning settings with a CRF and these rates (typed, as the stage and
    the export's recovery pass them)."""
    base = {
        **smoke_settings().finetune.task("ner").model_dump(by_alias=True),
        "optimizer": {"_target_": "torch.optim.AdamW"},
        "scheduler": {"_target_": "transformers.get_linear_schedule_with_warmup"},
        "lr": 1e-4,
        "head_lr": None,
        "layer_lr_decay": 1.0,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "crf": True,
        "crf_lr": 1e-2,
    }
    return FinetuneShared.model_validate({**base, **overrides})


def test_a_crf_needs_a_chain_of_labels_and_no_class_weights() -> None:
    model = SimpleNamespace(config=SimpleNamespace())
    sentiment = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "Acc"})
    with pytest.raises(ConfigError, match=r"finetune\.sentiment\.crf"):
        task_module(module_config(), model, sentiment, ["neg", "pos"], 10)
    ner = TokenClassificationTask("ner", HEADLINE)
    with pytest.raises(ConfigError, match=r"finetune\.ner\.class_weights"):
        task_module(module_config(), model, ner, LABELS, 10, class_weights=torch.ones(3))


def test_the_module_trains_on_the_crf_and_writes_its_scores_into_the_config() -> None:
    config = SimpleNamespace()
    model = torch.nn.Linear(1, 1)
    model.config = config  # type: ignore[attr-defined]
    ner = TokenClassificationTask("ner", HEADLINE)
    module = task_module(module_config(), model, ner, LABELS, 10)
    assert isinstance(module, TaskModule) and module.tag_transitions is not None
    with torch.no_grad():
        module.tag_transitions.transitions[1, 2] = 1.5
    logits, labels = torch.randn(1, 3, 3), torch.tensor([[0, 1, 2]])
    assert module.loss(logits, labels).item() == pytest.approx(
        module.tag_transitions.nll(logits, labels).item()
    )
    module.sync_tag_scores()
    assert getattr(config, CONFIG_KEY)["transitions"][1][2] == 1.5
    # a module built on that model starts from its scores; crf_lr 0 keeps them fixed
    fixed = task_module(module_config(crf_lr=0.0), model, ner, LABELS, 10)
    assert fixed.tag_transitions.as_dict() == getattr(config, CONFIG_KEY)
    assert not any(p.requires_grad for p in fixed.tag_transitions.parameters())
