"""Preparation: splits, de-duplication, leak removal, the corpus, and atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emergent.data import prepare
from emergent.data.sources import DataError
from emergent.tasks import all_tasks
from tests.conftest import ROOT, smoke_cfg
from tests.unit.test_tasks import NER, SENT


def test_normalize_text_nfc_and_whitespace() -> None:
    assert prepare.normalize_text("  Cafe\u0301 \t is\n\ngood ") == "Caf\u00e9 is good"


def test_split_is_deterministic_stratified_and_complete() -> None:
    examples = [{"text": f"t{i}", "label": "pos" if i % 4 else "neg"} for i in range(400)]
    fractions = {"validation": 0.1, "test": 0.2}
    first = prepare.split_examples(examples, fractions, seed=7, stratify=lambda e: e["label"])
    again = prepare.split_examples(examples, fractions, seed=7, stratify=lambda e: e["label"])
    other = prepare.split_examples(examples, fractions, seed=8, stratify=lambda e: e["label"])
    assert first == again and first != other
    assert {k: len(v) for k, v in first.items()} == {"train": 280, "validation": 40, "test": 80}
    for split in first.values():
        neg = sum(e["label"] == "neg" for e in split)
        assert neg / len(split) == pytest.approx(0.25)
    texts = [e["text"] for split in first.values() for e in split]
    assert sorted(texts) == sorted(e["text"] for e in examples)


def test_dedupe_and_leak_removal_counts() -> None:
    text = SENT.key
    kept, removed = prepare.dedupe([{"text": "a"}, {"text": "b"}, {"text": "a"}], text)
    assert [e["text"] for e in kept] == ["a", "b"] and removed == 1
    splits = {
        "train": [{"text": "a"}, {"text": "b"}, {"text": "c"}],
        "validation": [{"text": "b"}, {"text": "d"}],
        "test": [{"text": "c"}, {"text": "d"}],
    }
    counts = prepare.remove_leaks(splits, text)
    assert counts == {"train_overlapping_heldout": 2, "validation_overlapping_test": 1}
    assert [e["text"] for e in splits["train"]] == ["a"]
    assert [e["text"] for e in splits["test"]] == ["c", "d"]


def test_prepare_all_writes_splits_corpus_and_manifest(prepared_smoke: Path) -> None:
    manifest = json.loads((prepared_smoke / "manifest.json").read_text())
    assert list(manifest["tasks"]) == ["ner", "sentiment", "debate"]
    for task in ("ner", "sentiment", "debate"):
        rows = manifest["tasks"][task]["rows"]
        assert sum(rows.values()) <= 300 and rows["train"] > rows["test"] > 0
        for split, n in rows.items():
            lines = (prepared_smoke / task / f"{split}.jsonl").read_text().splitlines()
            assert len(lines) == n
    assert set(manifest["files"]) >= {"ner/train.jsonl", "corpus/train.txt"}
    corpus = set((prepared_smoke / "corpus" / "train.txt").read_text().splitlines())
    corpus |= set((prepared_smoke / "corpus" / "validation.txt").read_text().splitlines())
    for task, key in (("ner", "tokens"), ("sentiment", "text"), ("debate", "text")):
        for split in ("validation", "test"):
            for line in (prepared_smoke / task / f"{split}.jsonl").read_text().splitlines():
                row = json.loads(line)
                text = " ".join(row[key]) if key == "tokens" else row[key]
                assert text not in corpus, f"{task}/{split} text leaked into the corpus"


def test_bad_input_keeps_previous_prepared_data(tmp_path: Path) -> None:
    cfg = smoke_cfg()
    out = tmp_path / "prepared"
    prepare.prepare_all(cfg.data, all_tasks(cfg), 1, out, base_dir=ROOT)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.conll"
    bad.write_text("Hello\tO\nParis\tI-geo-loc\n", encoding="utf-8")
    cfg.data.ner.train = str(bad)
    with pytest.raises(DataError, match=r"bad\.conll:2"):
        prepare.prepare_all(cfg.data, all_tasks(cfg), 1, out, base_dir=ROOT)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared")]


def test_given_splits_are_used_and_leaks_removed(tmp_path: Path) -> None:
    train = tmp_path / "train.conll"
    test = tmp_path / "test.conll"
    train.write_text("Bob\tB-person\n\nAlice\tB-person\n\nBob\tB-person\n", encoding="utf-8")
    test.write_text("Alice\tB-person\n", encoding="utf-8")
    cfg = OmegaConf.create({"train": str(train), "test": str(test), "entity_types": ["person"]})
    splits, stats = prepare.prepare_task(NER, cfg, {}, 0, tmp_path)
    assert splits["train"] == [{"tokens": ["Bob"], "tags": ["B-person"]}]
    assert stats["duplicates_removed"]["train"] == 1
    assert stats["leaks_removed"]["train_overlapping_heldout"] == 1
