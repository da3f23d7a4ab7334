"""Preparation: splits, de-duplication, leak removal, the corpus, and atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emergent.data import prepare
from emergent.data.dedupe import dedupe
from emergent.data.sources import DataError
from emergent.schema import SplitConfig, TaskDataConfig
from emergent.tasks import all_tasks
from tests.conftest import ROOT, smoke_cfg, smoke_settings
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


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows), "utf-8")
    return path


@pytest.fixture
def explicit_files(tmp_path: Path):
    """Train, validation and test files with every kind of overlap: a duplicate inside each
    file, train examples that are in validation/test, and a validation example in test."""
    train = write_tsv(
        tmp_path / "train.tsv", [("a", "pos"), ("b", "neg"), ("c", "pos"), ("a", "pos")]
    )
    validation = write_tsv(
        tmp_path / "dev.tsv", [("b", "neg"), ("d", "pos"), ("e", "neg"), ("e", "neg")]
    )
    test = write_tsv(
        tmp_path / "test.tsv", [("c", "pos"), ("d", "pos"), ("f", "neg"), ("f", "neg")]
    )
    return TaskDataConfig(
        train=str(train), validation=str(validation), test=str(test), format="tsv"
    )


def test_dedupe_counts() -> None:
    kept, removed = dedupe([{"text": "a"}, {"text": "b"}, {"text": "a"}], SENT.key)
    assert [e["text"] for e in kept] == ["a", "b"] and removed == 1


def test_explicit_heldout_files_are_kept_whole_and_overlaps_counted(
    explicit_files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        splits, stats = prepare.prepare_task(SENT, explicit_files, SplitConfig(), 0, tmp_path)
    texts = {s: [e["text"] for e in rows] for s, rows in splits.items()}
    assert texts == {
        "train": ["a"],
        "validation": ["b", "d", "e", "e"],
        "test": ["c", "d", "f", "f"],
    }
    assert stats["duplicates_removed"] == {"train": 1}
    assert stats["leaks_removed"] == {
        "train_overlapping_heldout": 2,
        "validation_overlapping_test": 0,
    }
    assert stats["heldout_overlaps"] == {
        "validation_duplicates_kept": 1,
        "test_duplicates_kept": 1,
        "validation_test_overlap_kept": 1,
    }
    assert "held-out files are kept whole" in caplog.text
    assert "removed 2 train example(s)" in caplog.text


def test_dedupe_heldout_switch_deduplicates_them(explicit_files, tmp_path: Path) -> None:
    explicit_files.dedupe_heldout = True
    splits, stats = prepare.prepare_task(SENT, explicit_files, SplitConfig(), 0, tmp_path)
    texts = {s: [e["text"] for e in rows] for s, rows in splits.items()}
    assert texts == {"train": ["a"], "validation": ["b", "e"], "test": ["c", "d", "f"]}
    assert stats["duplicates_removed"] == {"train": 1, "validation": 1, "test": 1}
    assert stats["leaks_removed"]["validation_overlapping_test"] == 1
    assert set(stats["heldout_overlaps"].values()) == {0}


def test_test_file_via_ingest_equals_the_evaluate_reader(explicit_files, tmp_path: Path) -> None:
    """One test set, one number: the evaluate CLI reads `data.<task>.test` with
    read_task_file; ingest must prepare exactly those examples."""
    splits, _ = prepare.prepare_task(SENT, explicit_files, SplitConfig(), 0, tmp_path)
    assert explicit_files.test is not None
    direct, _ = prepare.read_task_file(SENT, explicit_files.test, explicit_files, tmp_path)
    assert splits["test"] == direct and len(direct) == 4


def test_validation_is_carved_out_of_train_when_only_test_is_given(tmp_path: Path) -> None:
    rows = [(f"text {i}", "pos" if i % 2 else "neg") for i in range(40)]
    cfg = TaskDataConfig(
        train=str(write_tsv(tmp_path / "train.tsv", rows)),
        test=str(write_tsv(tmp_path / "dev.tsv", [("other", "pos"), ("text 3", "pos")])),
    )
    split = SplitConfig(validation=0.25, test=0.5)
    splits, stats = prepare.prepare_task(SENT, cfg, split, 0, tmp_path)
    assert {s: len(v) for s, v in splits.items()} == {"train": 29, "validation": 10, "test": 2}
    assert stats["carved_from_train"] == {"validation": 0.25}
    train = {e["text"] for e in splits["train"]}
    assert not train & {e["text"] for e in splits["validation"]}
    assert "text 3" not in train  # it is in the test file
    assert sorted(e["label"] for e in splits["validation"]).count("pos") == 5  # stratified


def test_empty_split_names_task_split_and_setting(tmp_path: Path) -> None:
    cfg = TaskDataConfig(
        train=str(write_tsv(tmp_path / "train.tsv", [("a", "pos"), ("b", "neg")])),
        test=str(write_tsv(tmp_path / "dev.tsv", [("c", "pos")])),
    )
    with pytest.raises(
        DataError,
        match=r"data\.split\.validation: the validation split of task "
        r"'sentiment' is empty: it is carved out of 2 train examples",
    ):
        prepare.prepare_task(SENT, cfg, SplitConfig(validation=0.1), 0, tmp_path)


def test_empty_texts_are_counted_in_the_manifest(tmp_path: Path) -> None:
    rows = [("a", "pos"), ("  ", "neg"), ("b", "neg"), ("\u00a0", "pos")]
    cfg = TaskDataConfig(
        train=str(write_tsv(tmp_path / "train.tsv", rows * 1)),
        validation=str(write_tsv(tmp_path / "v.tsv", [("c", "pos")])),
        test=str(write_tsv(tmp_path / "t.tsv", [("d", "pos"), (" ", "pos")])),
    )
    _, stats = prepare.prepare_task(SENT, cfg, SplitConfig(), 0, tmp_path)
    assert stats["empty_dropped"] == 3
    assert stats["sources"]["train"]["empty_dropped"] == 2
    assert stats["sources"]["test"]["empty_dropped"] == 1


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
    data = smoke_settings().data
    out = tmp_path / "prepared"
    prepare.prepare_all(data, all_tasks(cfg), 1, out, base_dir=ROOT)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.conll"
    bad.write_text("Hello\tO\nParis\tI-geo-loc\n", encoding="utf-8")
    data.task("ner").train = str(bad)
    with pytest.raises(DataError, match=r"bad\.conll:2"):
        prepare.prepare_all(data, all_tasks(cfg), 1, out, base_dir=ROOT)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared")]


def test_given_splits_are_used_and_leaks_removed(tmp_path: Path) -> None:
    train = tmp_path / "train.conll"
    test = tmp_path / "test.conll"
    train.write_text("Bob\tB-person\n\nAlice\tB-person\n\nBob\tB-person\n", encoding="utf-8")
    test.write_text("Alice\tB-person\n", encoding="utf-8")
    validation = tmp_path / "validation.conll"
    validation.write_text("Carol\tB-person\n", encoding="utf-8")
    cfg = TaskDataConfig(
        train=str(train), validation=str(validation), test=str(test), entity_types=["person"]
    )
    splits, stats = prepare.prepare_task(NER, cfg, SplitConfig(), 0, tmp_path)
    assert splits["train"] == [{"tokens": ["Bob"], "tags": ["B-person"]}]
    assert stats["duplicates_removed"]["train"] == 1
    assert stats["leaks_removed"]["train_overlapping_heldout"] == 1


def write_feedback(folder: Path, train: list[dict], test: list[dict]) -> Path:
    from emergent.io import write_jsonl

    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", test)
    return folder


def test_feedback_joins_train_less_what_is_held_out(explicit_files, tmp_path: Path) -> None:
    # prepared without feedback: train ["a"], validation b d e e, test c d f f
    folder = write_feedback(
        tmp_path / "feedback",
        # g is new; d is in validation and test; a is in train; g again is a duplicate
        [{"text": t, "label": "pos"} for t in ("g", "d", "a", "g", "  h  ")],
        # i is new; g and h (whitespace normalised) are now in train; i again is a duplicate
        [{"text": t, "label": "neg"} for t in ("i", "g", "h", "i")],
    )
    explicit_files.feedback = "feedback"  # relative: under the base folder
    splits, stats = prepare.prepare_task(SENT, explicit_files, SplitConfig(), 0, tmp_path)
    texts = {s: [e["text"] for e in rows] for s, rows in splits.items()}
    assert texts["train"] == ["a", "g", "h"]
    assert texts["validation"] == ["b", "d", "e", "e"] and texts["test"] == ["c", "d", "f", "f"]
    assert texts["feedback_test"] == ["i"]
    feedback = stats["feedback"]
    assert (feedback["train"], feedback["test"]) == (2, 1)
    assert feedback["rows_read"] == {"train": 5, "test": 4}
    assert feedback["removed"] == {
        "train_overlapping_heldout_or_train": 3,
        "test_overlapping_train": 3,
    }
    from emergent.io import sha256_file

    assert feedback["sha256"] == sha256_file(folder / "train.jsonl")
    assert stats["rows"] == {"train": 3, "validation": 4, "test": 4, "feedback_test": 1}


def test_bad_feedback_is_one_line_naming_file_line_and_fields(
    explicit_files, tmp_path: Path
) -> None:
    explicit_files.feedback = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"nowhere: data.sentiment.feedback: no such folder"):
        prepare.prepare_task(SENT, explicit_files, SplitConfig(), 0, tmp_path)
    folder = write_feedback(
        tmp_path / "fb", [{"text": "g", "label": "pos"}, {"text": "x", "label": "neg", "id": 3}], []
    )
    explicit_files.feedback = str(folder)
    with pytest.raises(DataError, match=r"train\.jsonl:2: expected exactly the fields \['text', "):
        prepare.prepare_task(SENT, explicit_files, SplitConfig(), 0, tmp_path)


def test_feedback_is_prepared_recorded_and_checked(tmp_path: Path) -> None:
    from emergent.data.quality import build_checks

    cfg = smoke_cfg()
    data = smoke_settings().data
    base = prepare.prepare_all(data, all_tasks(cfg), 1, tmp_path / "base", base_dir=ROOT)
    # feedback test may repeat the test split (both are held out); only train overlap goes
    test = [json.loads(line) for line in (tmp_path / "base" / "ner" / "test.jsonl").open()]
    new = {
        "tokens": ["Ada", "Lovelace", "wrote", "notes"],
        "tags": ["B-person", "I-person", "O", "O"],
    }
    write_feedback(tmp_path / "fb", [new], [test[0], {"tokens": ["Paris"], "tags": ["B-geo-loc"]}])
    data.task("ner").feedback = str(tmp_path / "fb")
    out = tmp_path / "prepared"
    manifest = prepare.prepare_all(data, all_tasks(cfg), 1, out, base_dir=ROOT)
    stats = manifest["tasks"]["ner"]
    assert stats["rows"]["train"] == base["tasks"]["ner"]["rows"]["train"] + 1
    assert stats["rows"]["feedback_test"] == 2 and stats["feedback"]["test"] == 2
    assert "ner/feedback_test.jsonl" in manifest["files"]
    rows = [json.loads(line) for line in (out / "ner" / "feedback_test.jsonl").open()]
    assert rows[0] == test[0]
    # the corpus does not move: feedback re-runs fine-tuning, not pretraining
    for split in ("train", "validation"):
        corpus = Path("corpus") / f"{split}.txt"
        assert (out / corpus).read_bytes() == (tmp_path / "base" / corpus).read_bytes()
    checks = {c.name: c for c in build_checks(out, data, all_tasks(cfg))}
    assert len(checks["ner_feedback_test"].frame) == 2
