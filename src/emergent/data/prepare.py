"""Turn configured sources into clean, split, de-duplicated and leak-free prepared data.

Output layout (`data/prepared/`, see `emergent.data.layout`): `<task>/{train,validation,test}.jsonl`
for every configured task (and `<task>/feedback_test.jsonl` with `data.<task>.feedback`),
`corpus/{train,validation}.txt` and `manifest.json` (counts of everything kept and removed,
sha256 of every source and output file).

A task is anything with the `PreparedTask` protocol (`emergent.data.protocols`): data sits
below the task package, so it never imports `emergent.tasks`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emergent.data import formats
from emergent.data.dedupe import dedupe
from emergent.data.feedback import add_feedback
from emergent.data.layout import (
    FEEDBACK_TEST,
    HELD_OUT,
    SPLITS,
    corpus_path,
    manifest_path,
    split_path,
)
from emergent.data.protocols import PreparedTask
from emergent.data.sources import DataError, resolve
from emergent.io import atomic_dir, sha256_file, write_json, write_jsonl
from emergent.schema import CorpusConfig, DataBase, SplitConfig, TaskDataConfig

log = logging.getLogger(__name__)

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC and collapsed whitespace."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def sample_cap(examples: list, max_rows: int | None, seed: int) -> list:
    """A deterministic random subset of at most `max_rows` examples (order preserved)."""
    if not max_rows or len(examples) <= max_rows:
        return examples
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(examples), size=int(max_rows), replace=False))
    return [examples[i] for i in keep]


def split_examples(
    examples: list[dict],
    fractions: Mapping[str, float],
    seed: int,
    stratify: Callable[[dict], Hashable] | None = None,
) -> dict[str, list[dict]]:
    """Deterministic train/validation/test split; stratified by `stratify(example)` if given."""
    groups: dict[Hashable, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(stratify(example) if stratify else None, []).append(index)
    rng = np.random.default_rng(seed)
    assigned: dict[str, list[int]] = {s: [] for s in SPLITS}
    for key in sorted(groups, key=str):
        indices = np.array(groups[key])
        rng.shuffle(indices)
        n_val = round(len(indices) * float(fractions.get("validation", 0.0)))
        n_test = round(len(indices) * float(fractions.get("test", 0.0)))
        assigned["test"] += indices[:n_test].tolist()
        assigned["validation"] += indices[n_test : n_test + n_val].tolist()
        assigned["train"] += indices[n_test + n_val :].tolist()
    return {s: [examples[i] for i in sorted(idx)] for s, idx in assigned.items()}


def read_task_file(
    task: PreparedTask, source: str, cfg: TaskDataConfig, base_dir: Path
) -> tuple[list, dict[str, int]]:
    """Read one configured file of a task, exactly as ingest reads it: the normalised examples,
    and counts of the rows not kept (`skipped_by_label`: a label in `skip_labels`;
    `empty_dropped`: nothing left after normalisation, e.g. an empty text).

    `python -m emergent evaluate data.<task>.test=FILE` reads a test file with this too, and
    ingest keeps explicit held-out files whole, so both paths score the same examples."""
    path = resolve(source, base_dir)
    fmt = task.detect_format(path, cfg.format)
    examples, skipped = task.read(path, fmt, cfg, source)
    normalized = [task.normalize(e, normalize_text) for e in examples]
    kept = [e for e in normalized if e is not None]
    return kept, {"skipped_by_label": skipped, "empty_dropped": len(normalized) - len(kept)}


def _overlap(examples: list[dict], keys: set[Hashable], key: Callable[[dict], Hashable]) -> int:
    return sum(key(e) in keys for e in examples)


def prepare_task(
    task: PreparedTask, cfg: TaskDataConfig, split_cfg: SplitConfig, seed: int, base_dir: Path
) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Read, normalise, de-duplicate, de-leak, cap and split one task's data.

    Explicit held-out files (`data.<task>.validation` / `.test`) are kept whole: a public test
    set gives one number whichever path scores it (this pipeline, or `python -m emergent
    evaluate data.<task>.test=FILE`, which reads the file whole). Their duplicates and the
    examples validation shares with test are counted in the manifest (`heldout_overlaps`) and
    logged as a warning; `data.<task>.dedupe_heldout: true` removes them instead. Train is
    always de-duplicated and loses every example a held-out split holds. A held-out split
    without a file is carved out of train with the `data.split` fraction.
    """
    stats: dict[str, Any] = {
        "sources": {},
        "skipped_by_label": 0,
        "empty_dropped": 0,
        "duplicates_removed": {},
    }
    given = cfg.files()
    if "train" not in given:
        raise DataError(f"data.{task.name}.train", "no train file configured")
    read: dict[str, list[dict]] = {}
    for split, source in given.items():
        examples, counts = read_task_file(task, source, cfg, base_dir)
        for name, n in counts.items():
            stats[name] += n
        stats["sources"][split] = {
            "source": source,
            "sha256": sha256_file(resolve(source, base_dir)),
            "rows_read": len(examples),
            **counts,
        }
        read[split] = examples
        if not examples:
            raise DataError(source, f"no examples left for the {split} split of task {task.name!r}")

    held = {s: read[s] for s in HELD_OUT if s in read}
    overlaps, validation_removed = _heldout_overlaps(task, held, cfg.dedupe_heldout, stats)
    train, stats["duplicates_removed"]["train"] = dedupe(read["train"], task.key)
    held_keys = {task.key(e) for examples in held.values() for e in examples}
    before = len(train)
    train = [e for e in train if task.key(e) not in held_keys]
    stats["leaks_removed"] = {
        "train_overlapping_heldout": before - len(train),
        "validation_overlapping_test": validation_removed,
    }
    stats["heldout_overlaps"] = overlaps
    train = sample_cap(train, cfg.max_rows, seed)
    carved = [s for s in HELD_OUT if s not in held]
    carve = {"validation": split_cfg.validation, "test": split_cfg.test}
    fractions = {s: carve[s] for s in carved}
    pool = len(train)
    if carved:
        pieces = split_examples(train, fractions, seed, task.stratify)
        train = pieces["train"]
        held.update({s: pieces[s] for s in carved})
    stats["carved_from_train"] = {s: fractions[s] for s in carved}
    splits: dict[str, list[dict]] = {
        "train": train,
        "validation": held["validation"],
        "test": held["test"],
    }
    for split, examples in splits.items():
        if not examples:
            raise _empty_split(task, split, carved, fractions, pool)
    if cfg.feedback:  # joins train, adds `feedback_test` (emergent.data.feedback)
        stats["feedback"] = add_feedback(task, cfg.feedback, splits, normalize_text, base_dir)
    _warn_overlaps(task, stats)
    stats["rows"] = {s: len(v) for s, v in splits.items()}
    stats["labels"] = {s: task.label_counts(v) for s, v in splits.items()}
    return splits, stats


def _heldout_overlaps(
    task: PreparedTask, held: dict[str, list[dict]], dedupe_heldout: bool, stats: dict[str, Any]
) -> tuple[dict[str, int], int]:
    """Count (or, with `dedupe_heldout`, remove) duplicates inside the held-out files and the
    examples validation shares with test. Returns the overlaps that stay in the prepared
    splits, and how many validation examples were removed for being in test."""
    overlaps: dict[str, int] = {}
    removed = 0
    for split in list(held):
        kept, dup = dedupe(held[split], task.key)
        if dedupe_heldout:
            held[split] = kept
            stats["duplicates_removed"][split] = dup
        overlaps[f"{split}_duplicates_kept"] = 0 if dedupe_heldout else dup
    if set(HELD_OUT) <= set(held):
        test_keys = {task.key(e) for e in held["test"]}
        shared = _overlap(held["validation"], test_keys, task.key)
        if dedupe_heldout:
            held["validation"] = [e for e in held["validation"] if task.key(e) not in test_keys]
            removed = shared
        overlaps["validation_test_overlap_kept"] = 0 if dedupe_heldout else shared
    return overlaps, removed


def _warn_overlaps(task: PreparedTask, stats: dict[str, Any]) -> None:
    kept = {k: n for k, n in stats["heldout_overlaps"].items() if n}
    if kept:
        log.warning(
            "%s: held-out files are kept whole, with %s (set data.%s.dedupe_heldout=true to "
            "remove them)",
            task.name,
            ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in kept.items()),
            task.name,
        )
    removed = stats["leaks_removed"]["train_overlapping_heldout"]
    if removed:
        log.warning(
            "%s: removed %d train example(s) that also appear in a held-out split",
            task.name,
            removed,
        )
    if stats["empty_dropped"]:
        log.warning(
            "%s: dropped %d example(s) with no text left after normalisation",
            task.name,
            stats["empty_dropped"],
        )


def _empty_split(
    task: PreparedTask, split: str, carved: list[str], fractions: Mapping[str, float], n_train: int
) -> DataError:
    """Why a split ended up empty, naming the task, the split and the setting to change."""
    if split in carved:
        return DataError(
            f"data.split.{split}",
            f"the {split} split of task {task.name!r} is empty: it is carved out of "
            f"{n_train} train examples with fraction {fractions[split]}; raise the fraction "
            f"or give data.{task.name}.{split}=<file>",
        )
    why = " after removing the examples that appear in held-out files" if split == "train" else ""
    return DataError(
        f"data.{task.name}.{split}", f"the {split} split of task {task.name!r} is empty{why}"
    )


def split_paragraphs(text: str, min_chars: int) -> list[str]:
    """Long documents (speeches, plots) become one line per paragraph."""
    pieces = (normalize_text(p) for p in re.split(r"\n\s*\n|\n", text))
    return [p for p in pieces if len(p) >= min_chars]


def build_corpus(
    task_splits: Mapping[PreparedTask, dict[str, list[dict]]],
    cfg: CorpusConfig,
    seed: int,
    base_dir: Path,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """MLM corpus: train-split texts of every task (user feedback aside: `prepare_all`)
    plus unlabeled sources.

    Validation, test and feedback test texts of any task never enter it: an unlabeled document whose
    normalised text is a held-out example is dropped whole, before it is cut into paragraphs
    (a multi-paragraph debate statement would otherwise slip in piece by piece).
    """
    min_chars = cfg.min_chars
    held_out = {
        task.text(e)
        for task, splits in task_splits.items()
        for split in (*HELD_OUT, FEEDBACK_TEST)
        for e in splits.get(split, [])
    }
    docs: list[str] = []
    stats: dict[str, Any] = {"sources": {}}
    for task, splits in task_splits.items():
        texts = [task.text(e) for e in splits["train"]]
        docs += texts
        stats["sources"][f"{task.name}:train"] = {"rows_read": len(texts)}
    for index, entry in enumerate(cfg.unlabeled):
        source = entry.path
        path = resolve(source, base_dir)
        raw = formats.read_unlabeled_text(
            path,
            formats.detect_format(path, entry.format),
            text_column=entry.text_column,
            where=entry.where,
            encoding=entry.encoding,
            label=source,
            task=f"corpus.unlabeled[{index}]",
        )
        kept = [text for text in raw if normalize_text(text) not in held_out]
        pieces = [p for text in kept for p in split_paragraphs(text, min_chars)]
        docs += pieces
        stats["heldout_documents_removed"] = stats.get("heldout_documents_removed", 0) + (
            len(raw) - len(kept)
        )
        stats["sources"][source] = {"sha256": sha256_file(path), "rows_read": len(pieces)}
    docs = [d for d in docs if len(d) >= min_chars or d in held_out]
    rows, dup = dedupe([{"text": d} for d in docs], lambda d: d["text"])
    before = len(rows)
    rows = [d for d in rows if d["text"] not in held_out]
    stats["duplicates_removed"] = dup
    stats["heldout_text_removed"] = before - len(rows)
    texts = sample_cap([d["text"] for d in rows], cfg.max_rows, seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    n_val = max(1, round(len(texts) * cfg.validation_fraction))
    corpus = {
        "validation": [texts[i] for i in sorted(order[:n_val])],
        "train": [texts[i] for i in sorted(order[n_val:])],
    }
    stats["rows"] = {s: len(v) for s, v in corpus.items()}
    return corpus, stats


def prepare_all(
    data_cfg: DataBase,
    tasks: Sequence[PreparedTask],
    seed: int,
    prepared_dir: Path,
    base_dir: Path,
) -> dict:
    """Prepare every task and the corpus, then swap the whole folder in atomically.

    On any error nothing under `prepared_dir` changes.
    """
    task_splits: dict[PreparedTask, dict[str, list[dict]]] = {}
    corpus_splits: dict[PreparedTask, dict[str, list[dict]]] = {}
    manifest: dict[str, Any] = {"seed": seed, "tasks": {}}
    for task in tasks:
        splits, stats = prepare_task(task, data_cfg.task(task.name), data_cfg.split, seed, base_dir)
        task_splits[task] = splits
        manifest["tasks"][task.name] = stats
        log.info("%s: %s", task.name, stats["rows"])
        # User feedback (appended to train by add_feedback) stays out of the MLM corpus: new
        # feedback re-runs a task's fine-tuning, never the tokenizer and pretraining.
        own = len(splits["train"]) - int(stats.get("feedback", {}).get("train", 0))
        corpus_splits[task] = {**splits, "train": splits["train"][:own]}
    corpus, corpus_stats = build_corpus(corpus_splits, data_cfg.corpus, seed, base_dir)
    manifest["corpus"] = corpus_stats
    log.info("corpus: %s", corpus_stats["rows"])

    with atomic_dir(prepared_dir) as tmp:
        files: dict[str, str] = {}
        for task, splits in task_splits.items():
            for split, rows in splits.items():
                write_jsonl(split_path(tmp, task.name, split), rows)
        for split, lines in corpus.items():
            corpus_path(tmp, split).parent.mkdir(parents=True, exist_ok=True)
            corpus_path(tmp, split).write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8"
            )
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            files[str(file.relative_to(tmp))] = sha256_file(file)
        manifest["files"] = files
        write_json(manifest_path(tmp), manifest)
    return manifest
