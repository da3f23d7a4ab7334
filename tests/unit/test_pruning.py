"""Structured pruning of a small BERT: importance, head/FFN/vocabulary pruning, reload."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from emergent.export.pipeline import gate_failures
from emergent.export.tradeoff import Plan, plans, scan, smallest_within
from emergent.models import pruning
from emergent.models.backbone import load_tokenizer, train_wordpiece
from emergent.serving.package import ParityReport

TEXTS = [
    "the film was a delight from start to finish",
    "a dull and lifeless script",
    "great acting but a weak plot",
    "i would watch it again tomorrow",
] * 8


@pytest.fixture(scope="module")
def tokenizer() -> object:
    corpus = TEXTS + ["zebra quokka xylophone marvellous abysmal"] * 4
    return train_wordpiece(corpus, vocab_size=200, min_frequency=1, lowercase=True, max_length=32)


def small_model(vocab: int) -> object:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def encode(tokenizer: object, texts: list[str]) -> dict:
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def test_prune_level_zero_keeps_logits_and_reloads(tokenizer: object, tmp_path: Path) -> None:
    model = small_model(len(tokenizer))
    batch = encode(tokenizer, TEXTS[:4])
    reference = model(**batch).logits
    heads, neurons = pruning.importance(model, [{**batch, "labels": torch.tensor([1, 0, 0, 1])}])
    assert heads.shape == (2, 4) and neurons.shape == (2, 64) and heads.sum() > 0

    keep = pruning.used_token_ids(tokenizer, TEXTS)
    new_tokenizer = pruning.prune_vocabulary(model, tokenizer, keep)
    assert pruning.prune_structure(model, heads, neurons, 0.0) == {
        "heads_per_layer": 4,
        "intermediate_size": 64,
    }
    assert model.config.vocab_size == len(keep) < len(tokenizer)
    new_batch = encode(new_tokenizer, TEXTS[:4])
    assert torch.allclose(model(**new_batch).logits, reference, atol=1e-5)
    # Words outside the kept vocabulary still split into characters, not [UNK].
    ids = new_tokenizer("zebra")["input_ids"]
    assert new_tokenizer.unk_token_id not in ids

    pruning.prune_structure(model, heads, neurons, 0.5)
    model.save_pretrained(tmp_path)
    new_tokenizer.save_pretrained(tmp_path)
    from transformers import BertForSequenceClassification

    reloaded = pruning.load_pruned(BertForSequenceClassification, tmp_path)
    layer = reloaded.bert.encoder.layer[0]
    assert layer.attention.self.query.out_features == 2 * 8  # 2 of 4 heads of size 8
    assert layer.intermediate.dense.out_features == 32
    assert reloaded.get_input_embeddings().num_embeddings == len(keep)
    saved_batch = encode(load_tokenizer(tmp_path), TEXTS[:4])
    assert torch.equal(saved_batch["input_ids"], new_batch["input_ids"])
    assert torch.allclose(reloaded(**saved_batch).logits, model(**new_batch).logits, atol=1e-6)


def test_pruned_heads_are_the_least_important() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.7, 0.1, 0.2, 0.8]])
    kept = pruning.keep_top(scores, 2)
    assert [k.tolist() for k in kept] == [[1, 2], [0, 3]]


PARITY = ParityReport(
    max_abs_logit_diff=1e-5,
    atol=1e-3,
    int8_drop=3.0,  # test: reported, never decides (the choice was made on validation)
    int8_drop_ci=[1.0, 5.0],
    int8_val_drop=0.4,
    int8_val_drop_ci=[0.1, 0.7],
    max_metric_drop=1.0,
    drop_gate="estimate",
    per_channel=False,
    threads=2,
)


def test_gate_judges_the_validation_drop_and_the_logit_difference() -> None:
    parity = PARITY
    assert gate_failures(parity, "accuracy") == []
    failures = gate_failures(
        replace(parity, int8_val_drop=1.5, int8_val_drop_ci=[-0.5, 3.2]), "accuracy"
    )
    assert failures == [
        "int8 accuracy drops 1.50 points on the validation split (> export.max_metric_drop=1.0; "
        "paired interval -0.50 to 3.20, export.drop_gate=estimate)"
    ]
    both = replace(parity, int8_val_drop=2.0, max_abs_logit_diff=0.1)
    assert len(gate_failures(both, "F1")) == 2


def test_significant_gate_refuses_only_a_drop_the_bootstrap_says_is_real() -> None:
    parity = replace(PARITY, int8_val_drop=1.64, drop_gate="significant")
    # about two of 141 entities: the interval reaches below zero, so the package ships
    assert gate_failures(replace(parity, int8_val_drop_ci=[-0.8, 4.1]), "F1") == []
    # the same estimate with every resample losing: refused
    refused = gate_failures(replace(parity, int8_val_drop_ci=[0.2, 3.3]), "F1")
    assert refused == [
        "int8 F1 drops 1.64 points on the validation split (> export.max_metric_drop=1.0; "
        "paired interval 0.20 to 3.30, export.drop_gate=significant)"
    ]
    # within the tolerance the interval is not consulted
    assert (
        gate_failures(replace(parity, int8_val_drop=0.9, int8_val_drop_ci=[0.5, 1.3]), "F1") == []
    )


def test_the_smallest_candidate_within_the_validation_drop_ships_whatever_test_says() -> None:
    rows = [
        {"size_mb": 21.7, "val_drop": 0.0, "drop": -1.9},
        {"size_mb": 17.8, "val_drop": 0.6, "drop": 3.9},  # test would refuse it: not asked
        {"size_mb": 16.6, "val_drop": 1.4, "drop": -0.3},  # test would take it: not asked
        {"size_mb": 12.7, "val_drop": 2.2, "drop": 1.9},
    ]
    assert smallest_within(rows, 1.0) == 1
    assert smallest_within(rows, 2.5) == 3
    assert smallest_within(rows, -1.0) is None


def test_candidates_are_planned_smallest_first_with_their_exact_parameter_counts(
    tokenizer: object,
) -> None:
    """The scan order comes from parameter counts taken before anything is built: each count is
    what the built candidate has (structure pruned, vocabulary cut), and the order is by it."""
    model = small_model(len(tokenizer))
    batch = encode(tokenizer, TEXTS[:4])
    scores = pruning.importance(model, [{**batch, "labels": torch.tensor([1, 0, 0, 1])}])
    keep = pruning.used_token_ids(tokenizer, TEXTS)
    planned = plans(model, [0.0, 0.5], scores, keep)
    assert [(p.level, p.keep_ids is None) for p in planned] == [
        (0.5, False), (0.5, True), (0.0, False), (0.0, True),
    ]  # fmt: skip
    for plan in planned:
        built = copy.deepcopy(model)
        pruning.prune_structure(built, scores[0], scores[1], plan.level)
        if plan.keep_ids is not None:
            pruning.prune_vocabulary(built, tokenizer, plan.keep_ids)
        assert plan.params == sum(p.numel() for p in built.parameters())
    assert sum(p.numel() for p in model.parameters()) == planned[-1].params  # model untouched


def _rows(val_drops: list[float]) -> tuple[list[Plan], list[dict]]:
    ordered = [Plan(level, None, 10 + i) for i, level in enumerate([0.75, 0.5, 0.25, 0.0])]
    rows = [
        {"level": p.level, "size_mb": p.params, "val_drop": d}
        for p, d in zip(ordered, val_drops, strict=True)
    ]
    return ordered, rows


@pytest.mark.parametrize(
    ("val_drops", "built"),
    [
        ([0.2, 0.0, 0.0, 0.0], [0.75]),  # the smallest passes: nothing else is built
        ([3.2, 0.05, 0.0, 0.0], [0.75, 0.5]),  # the NER case: the second smallest ships
        ([3.0, 2.0, 1.5, 1.1], [0.75, 0.5, 0.25, 0.0]),  # none passes: all built (fallback)
    ],
)
def test_the_scan_stops_at_the_first_candidate_within_the_drop(
    val_drops: list[float], built: list[float]
) -> None:
    ordered, rows = _rows(val_drops)
    by_level = {row["level"]: row for row in rows}
    seen = scan(ordered, lambda plan: by_level[plan.level], 1.0, until_chosen=True)
    assert [row["level"] for row in seen] == built
    everything = scan(ordered, lambda plan: by_level[plan.level], 1.0, until_chosen=False)
    assert everything == rows
    # the rows left unbuilt never change what ships (the smallest within the drop, if any)
    index = smallest_within(everything, 1.0)
    assert (everything[index] if index is not None else None) == (
        seen[-1] if seen[-1]["val_drop"] <= 1.0 else None
    )


def _identity_graph(path: Path, pad_bytes: int) -> Path:
    """A valid one-node ONNX graph; `pad_bytes` of initializer make the two schemes' files
    differ in size."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    pad = numpy_helper.from_array(np.zeros(pad_bytes // 4, dtype=np.float32), "pad")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y], [pad])
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.mark.parametrize(
    ("scores", "kept"), [({False: 50.0, True: 53.3}, True), ({False: 50.0, True: 50.0}, False)]
)
def test_a_candidate_keeps_its_more_accurate_int8_scheme(
    tmp_path: Path, scores: dict[bool, float], kept: bool
) -> None:
    """per_channel auto: both int8 graphs are scored on validation, the better one stays (a tie
    keeps per tensor, tried first), the other file is deleted, and the curve row records the
    scheme, its score and its graph's size."""
    from emergent.export.tradeoff import Candidate, int8_schemes

    assert int8_schemes("auto") == (False, True)
    assert int8_schemes(True) == (True,) and int8_schemes(False) == (False,)
    paths = {pc: _identity_graph(tmp_path / f"pc{int(pc)}.onnx", 4096 * (1 + pc)) for pc in scores}
    cand = Candidate(0.5, None, "tok", tmp_path / "fp32.onnx", dict(paths), {})
    with pytest.raises(RuntimeError, match="pick_scheme first"):
        _ = cand.per_channel
    asked = iter([scores[False], scores[True]])
    cand.pick_scheme(lambda forward, tok: next(asked))
    assert cand.per_channel is kept and cand.int8_path == paths[kept]
    assert paths[kept].is_file() and not paths[not kept].exists()
    assert cand.row["val_metric"] == scores[kept] and cand.row["per_channel"] is kept
    assert cand.row["size_mb"] == pytest.approx(paths[kept].stat().st_size / 2**20)
