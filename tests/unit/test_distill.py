"""Distillation loss of the recovery fine-tune: known values, ignored positions, both shapes."""

from __future__ import annotations

import math

import pytest
import torch

from emergent.models.distill import distillation_loss
from tests.helpers import tiny_bert_config


def test_kl_to_the_teacher_has_the_hand_computed_value() -> None:
    # teacher (0, 0) -> p = (1/2, 1/2); student (ln 3, 0) -> q = (3/4, 1/4)
    # KL(p || q) = 1/2 ln(2/3) + 1/2 ln(2)
    student = torch.tensor([[math.log(3.0), 0.0]])
    teacher = torch.zeros(1, 2)
    expected = 0.5 * math.log(2 / 3) + 0.5 * math.log(2)
    assert distillation_loss(student, teacher, torch.tensor([0]), 1.0).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_temperature_softens_both_sides_and_rescales_by_its_square() -> None:
    # At T=2 the student's logits (ln 9, 0) soften to (ln 3, 0): the T=1 case above, times 4.
    student = torch.tensor([[math.log(9.0), 0.0]])
    expected = 4 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    loss = distillation_loss(student, torch.zeros(1, 2), torch.tensor([1]), 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_token_positions_without_a_label_do_not_count() -> None:
    teacher = torch.zeros(1, 3, 2)
    student = torch.zeros(1, 3, 2)
    labels = torch.tensor([[0, -100, 1]])
    assert distillation_loss(student, teacher, labels, 1.0).item() == pytest.approx(0.0)
    student[0, 1] = torch.tensor([5.0, -5.0])  # an ignored sub-word position
    assert distillation_loss(student, teacher, labels, 1.0).item() == pytest.approx(0.0)
    student[0, 2] = torch.tensor([math.log(3.0), 0.0])  # a labelled one: mean over 2 positions
    expected = (0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2
    assert distillation_loss(student, teacher, labels, 1.0).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_no_labelled_position_gives_zero_with_a_gradient() -> None:
    student = torch.randn(1, 2, 3, requires_grad=True)
    loss = distillation_loss(student, torch.randn(1, 2, 3), torch.full((1, 2), -100), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and student.grad is not None


def _module(alpha: float, teacher: torch.nn.Module | None = None) -> object:
    import copy

    from transformers import BertForSequenceClassification

    from emergent.models.distill import DistilledTaskModule

    config = tiny_bert_config(
        hidden_size=8, intermediate_size=16, max_position_embeddings=512, num_labels=2
    )
    torch.manual_seed(0)
    student = BertForSequenceClassification(config).eval()
    return DistilledTaskModule(
        student,
        None,
        ["negative", "positive"],
        optimizer={},
        scheduler={},
        lr=1e-3,
        weight_decay=0.0,
        warmup_ratio=0.0,
        total_steps=1,
        teacher=teacher if teacher is not None else copy.deepcopy(student),
        alpha=alpha,
        temperature=1.0,
    )


BATCH = {
    "input_ids": torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    "labels": torch.tensor([0, 1]),
}


def test_a_student_identical_to_its_teacher_has_nothing_to_distil() -> None:
    """alpha 1: only the teacher counts, and an identical student matches it exactly (the
    hard labels would still cost cross-entropy); alpha 0: the plain cross-entropy."""
    distilled = _module(alpha=1.0)
    assert distilled.training_step(BATCH, 0).item() == pytest.approx(0.0, abs=1e-6)
    plain = _module(alpha=0.0)
    logits = plain.model(input_ids=BATCH["input_ids"], attention_mask=BATCH["attention_mask"])
    ce = torch.nn.functional.cross_entropy(logits.logits, BATCH["labels"]).item()
    assert ce > 0.1
    assert plain.training_step(BATCH, 0).item() == pytest.approx(ce, rel=1e-5)


def test_the_teacher_is_not_trained_or_switched_to_train_mode() -> None:
    module = _module(alpha=0.5)
    teacher = module._teacher[0]
    module.train()
    trained = {id(p) for p in module.parameters()}
    assert not teacher.training
    assert not any(id(p) in trained for p in teacher.parameters())
