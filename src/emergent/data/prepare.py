"""Turn configured sources into clean, split, de-duplicated and leak-free prepared data.

Output layout (`data/prepared/`): `<task>/{train,validation,test}.jsonl` for every configured
task, `corpus/{train,validation}.txt` and `manifest.json`
(counts of everything kept and removed, sha256 of every source and output file).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from emergent.data import formats
from emergent.data.sources import DataError, resolve
from emergent.io import atomic_dir, sha256_file, write_json, write_jsonl
from emergent.tasks import Task

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC and collapsed whitespace."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def dedupe(examples: list[dict], key: Callable[[dict], Hashable]) -> tuple[list, int]:
    """Drop exact duplicates (same input text), keeping the first occurrence."""
    seen: set[Hashable] = set()
    kept = []
    for example in examples:
        k = key(example)
        if k not in seen:
            seen.add(k)
            kept.append(example)
    return kept, len(examples) - len(kept)


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


def remove_leaks(splits: dict[str, list[dict]], key: Callable[[dict], Hashable]) -> dict[str, int]:
    """Make splits disjoint by input text: train loses what validation/test hold, and
    validation loses what test holds (test is never changed). Returns removed counts."""
    test_keys = {key(e) for e in splits["test"]}
    held_out = test_keys | {key(e) for e in splits["validation"]}
    before_train, before_val = len(splits["train"]), len(splits["validation"])
    splits["train"] = [e for e in splits["train"] if key(e) not in held_out]
    splits["validation"] = [e for e in splits["validation"] if key(e) not in test_keys]
    return {
        "train_overlapping_heldout": before_train - len(splits["train"]),
        "validation_overlapping_test": before_val - len(splits["validation"]),
    }


def read_task_file(task: Task, source: str, cfg: DictConfig, base_dir: Path) -> tuple[list, int]:
    """Read one configured file of a task; returns (normalised examples, rows skipped by
    label)."""
    path = resolve(source, base_dir)
    fmt = task.detect_format(path, cfg.get("format", "auto"))
    examples, skipped = task.read(path, fmt, cfg, source)
    normalized = (task.normalize(e, normalize_text) for e in examples)
    return [e for e in normalized if e is not None], skipped


def prepare_task(
    task: Task, cfg: DictConfig, split_cfg: Mapping[str, float], seed: int, base_dir: Path
) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Read, normalise, cap, split, de-duplicate and de-leak one task's data."""
    stats: dict[str, Any] = {"sources": {}, "skipped_by_label": 0, "duplicates_removed": {}}
    given = {s: cfg.get(s) for s in SPLITS if cfg.get(s)}
    if "train" not in given:
        raise DataError(f"data.{task.name}.train", "no train file configured")
    read: dict[str, list[dict]] = {}
    for split, source in given.items():
        examples, skipped = read_task_file(task, str(source), cfg, base_dir)
        stats["skipped_by_label"] += skipped
        stats["sources"][split] = {
            "source": str(source),
            "sha256": sha256_file(resolve(str(source), base_dir)),
            "rows_read": len(examples),
        }
        read[split] = examples

    max_rows = cfg.get("max_rows")
    if set(given) == {"train"}:
        pool, dup = dedupe(read["train"], task.key)
        stats["duplicates_removed"]["all"] = dup
        pool = sample_cap(pool, max_rows, seed)
        splits = split_examples(pool, split_cfg, seed, task.stratify)
    else:
        splits = {}
        for split in SPLITS:
            kept, dup = dedupe(read.get(split, []), task.key)
            stats["duplicates_removed"][split] = dup
            splits[split] = sample_cap(kept, max_rows, seed) if split == "train" else kept
    stats["leaks_removed"] = remove_leaks(splits, task.key)
    stats["rows"] = {s: len(v) for s, v in splits.items()}
    stats["labels"] = {s: task.label_counts(v) for s, v in splits.items()}
    return splits, stats


def split_paragraphs(text: str, min_chars: int) -> list[str]:
    """Long documents (speeches, plots) become one line per paragraph."""
    pieces = (normalize_text(p) for p in re.split(r"\n\s*\n|\n", text))
    return [p for p in pieces if len(p) >= min_chars]


def build_corpus(
    task_splits: Mapping[Task, dict[str, list[dict]]], cfg: DictConfig, seed: int, base_dir: Path
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """MLM corpus: train-split texts of every task plus unlabeled sources.

    Validation and test texts of any task never enter it: an unlabeled document whose
    normalised text is a held-out example is dropped whole, before it is cut into paragraphs
    (a multi-paragraph debate statement would otherwise slip in piece by piece).
    """
    min_chars = int(cfg.get("min_chars", 1))
    held_out = {
        task.text(e)
        for task, splits in task_splits.items()
        for split in ("validation", "test")
        for e in splits[split]
    }
    docs: list[str] = []
    stats: dict[str, Any] = {"sources": {}}
    for task, splits in task_splits.items():
        texts = [task.text(e) for e in splits["train"]]
        docs += texts
        stats["sources"][f"{task.name}:train"] = {"rows_read": len(texts)}
    for entry in cfg.get("unlabeled") or []:
        source = str(entry["path"])
        path = resolve(source, base_dir)
        fmt = formats.detect_format(path, entry.get("format", "auto"))
        where = entry.get("where")
        raw = formats.read_unlabeled_text(
            path,
            fmt,
            text_column=entry.get("text_column", "text"),
            where=OmegaConf.to_container(where) if where is not None else None,
            encoding=entry.get("encoding", "utf-8"),
            label=source,
        )
        kept = [text for text in raw if normalize_text(text) not in held_out]
        pieces = [p for text in kept for p in split_paragraphs(text, min_chars)]
        docs += pieces
        stats["heldout_documents_removed"] = stats.get("heldout_documents_removed", 0) + (
            len(raw) - len(kept)
        )
        stats["sources"][source] = {"sha256": sha256_file(path), "rows_read": len(pieces)}
    docs = [d for d in docs if len(d) >= min_chars or d in held_out]
    docs, dup = dedupe([{"text": d} for d in docs], lambda d: d["text"])
    before = len(docs)
    docs = [d for d in docs if d["text"] not in held_out]
    stats["duplicates_removed"] = dup
    stats["heldout_text_removed"] = before - len(docs)
    texts = sample_cap([d["text"] for d in docs], cfg.get("max_rows"), seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    n_val = max(1, round(len(texts) * float(cfg.get("validation_fraction", 0.02))))
    corpus = {
        "validation": [texts[i] for i in sorted(order[:n_val])],
        "train": [texts[i] for i in sorted(order[n_val:])],
    }
    stats["rows"] = {s: len(v) for s, v in corpus.items()}
    return corpus, stats


def prepare_all(
    data_cfg: DictConfig, tasks: list[Task], seed: int, prepared_dir: Path, base_dir: Path
) -> dict:
    """Prepare every task and the corpus, then swap the whole folder in atomically.

    On any error nothing under `prepared_dir` changes.
    """
    task_splits: dict[Task, dict[str, list[dict]]] = {}
    manifest: dict[str, Any] = {"seed": seed, "tasks": {}}
    for task in tasks:
        splits, stats = prepare_task(task, data_cfg[task.name], data_cfg.split, seed, base_dir)
        task_splits[task] = splits
        manifest["tasks"][task.name] = stats
        log.info("%s: %s", task.name, stats["rows"])
    corpus, corpus_stats = build_corpus(task_splits, data_cfg.corpus, seed, base_dir)
    manifest["corpus"] = corpus_stats
    log.info("corpus: %s", corpus_stats["rows"])

    with atomic_dir(prepared_dir) as tmp:
        files: dict[str, str] = {}
        for task, splits in task_splits.items():
            for split, rows in splits.items():
                write_jsonl(tmp / task.name / f"{split}.jsonl", rows)
        for split, lines in corpus.items():
            (tmp / "corpus").mkdir(parents=True, exist_ok=True)
            (tmp / "corpus" / f"{split}.txt").write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8"
            )
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            files[str(file.relative_to(tmp))] = sha256_file(file)
        manifest["files"] = files
        write_json(tmp / "manifest.json", manifest)
    return manifest


def load_task_split(prepared_dir: Path, task: str, split: str) -> list[dict]:
    from emergent.io import read_jsonl

    path = Path(prepared_dir) / task / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the ingest stage first (dvc repro ingest)")
    return read_jsonl(path)
