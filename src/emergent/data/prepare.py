"""Turn configured sources into clean, split, de-duplicated and leak-free prepared data.

Output layout (`data/prepared/`): `ner/{train,validation,test}.jsonl`,
`sentiment/{train,validation,test}.jsonl`, `corpus/{train,validation}.txt` and `manifest.json`
(counts of everything kept and removed, sha256 of every source and output file).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from emergent.data import formats
from emergent.data.sources import DataError, resolve
from emergent.io import atomic_dir, sha256_file, write_json, write_jsonl

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
TASKS = ("ner", "sentiment")
_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC and collapsed whitespace."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def normalize_ner(example: formats.NerExample) -> formats.NerExample:
    tokens = [normalize_text(t) for t in example["tokens"]]
    return {"tokens": tokens, "tags": list(example["tags"])}


def text_key(example: Mapping[str, Any]) -> Hashable:
    """What makes two examples 'the same': their input text."""
    if "tokens" in example:
        return tuple(example["tokens"])
    return example["text"]


def example_text(example: Mapping[str, Any]) -> str:
    return " ".join(example["tokens"]) if "tokens" in example else example["text"]


def dedupe(examples: list[dict], key: Callable[[dict], Hashable] = text_key) -> tuple[list, int]:
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


def remove_leaks(splits: dict[str, list[dict]]) -> dict[str, int]:
    """Make splits disjoint by input text: train loses what validation/test hold, and
    validation loses what test holds (test is never changed). Returns removed counts."""
    test_keys = {text_key(e) for e in splits["test"]}
    held_out = test_keys | {text_key(e) for e in splits["validation"]}
    before_train, before_val = len(splits["train"]), len(splits["validation"])
    splits["train"] = [e for e in splits["train"] if text_key(e) not in held_out]
    splits["validation"] = [e for e in splits["validation"] if text_key(e) not in test_keys]
    return {
        "train_overlapping_heldout": before_train - len(splits["train"]),
        "validation_overlapping_test": before_val - len(splits["validation"]),
    }


def read_task_file(task: str, source: str, cfg: DictConfig, base_dir: Path) -> tuple[list, int]:
    """Read one configured file of a task; returns (examples, rows skipped by label)."""
    path = resolve(source, base_dir)
    fmt = formats.detect_format(path, cfg.get("format", "auto"), kind=task)
    encoding = cfg.get("encoding", "utf-8")
    if task == "ner":
        types = cfg.get("entity_types")
        types = list(types) if types is not None else None
        reader = formats.read_ner_jsonl if fmt == "jsonl" else formats.read_conll
        if fmt not in {"jsonl", "conll"}:
            raise DataError(source, f"format {fmt!r} is not supported for NER (conll, jsonl)")
        examples = [normalize_ner(e) for e in reader(path, encoding, types, label=source)]
        return [e for e in examples if e["tokens"]], 0
    label_map = cfg.get("label_map")
    examples, skipped = formats.read_labeled_text(
        path,
        fmt,
        text_column=cfg.get("text_column", "text"),
        label_column=cfg.get("label_column", "label"),
        label_map=OmegaConf.to_container(label_map) if label_map is not None else None,
        skip_labels=list(cfg.get("skip_labels") or []),
        encoding=encoding,
        label=source,
    )
    examples = [{"text": normalize_text(e["text"]), "label": e["label"]} for e in examples]
    return [e for e in examples if e["text"]], skipped


def prepare_task(
    task: str, cfg: DictConfig, split_cfg: Mapping[str, float], seed: int, base_dir: Path
) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Read, normalise, cap, split, de-duplicate and de-leak one task's data."""
    stats: dict[str, Any] = {"sources": {}, "skipped_by_label": 0, "duplicates_removed": {}}
    given = {s: cfg.get(s) for s in SPLITS if cfg.get(s)}
    if "train" not in given:
        raise DataError(f"data.{task}.train", "no train file configured")
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
        stratify = (lambda e: e["label"]) if task == "sentiment" else None
        pool, dup = dedupe(read["train"])
        stats["duplicates_removed"]["all"] = dup
        pool = sample_cap(pool, max_rows, seed)
        splits = split_examples(pool, split_cfg, seed, stratify)
    else:
        splits = {}
        for split in SPLITS:
            kept, dup = dedupe(read.get(split, []))
            stats["duplicates_removed"][split] = dup
            splits[split] = sample_cap(kept, max_rows, seed) if split == "train" else kept
    stats["leaks_removed"] = remove_leaks(splits)
    stats["rows"] = {s: len(v) for s, v in splits.items()}
    if task == "sentiment":
        stats["labels"] = {
            s: dict(sorted(Counter(e["label"] for e in v).items())) for s, v in splits.items()
        }
    else:
        stats["tags"] = {
            s: dict(sorted(Counter(t for e in v for t in e["tags"]).items()))
            for s, v in splits.items()
        }
    return splits, stats


def split_paragraphs(text: str, min_chars: int) -> list[str]:
    """Long documents (speeches, plots) become one line per paragraph."""
    pieces = (normalize_text(p) for p in re.split(r"\n\s*\n|\n", text))
    return [p for p in pieces if len(p) >= min_chars]


def build_corpus(
    task_splits: Mapping[str, dict[str, list[dict]]], cfg: DictConfig, seed: int, base_dir: Path
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """MLM corpus: train-split texts of every task plus unlabeled sources.

    Validation and test texts of any task never enter it (also not via the unlabeled sources).
    """
    min_chars = int(cfg.get("min_chars", 1))
    held_out = {
        example_text(e)
        for splits in task_splits.values()
        for split in ("validation", "test")
        for e in splits[split]
    }
    docs: list[str] = []
    stats: dict[str, Any] = {"sources": {}}
    for task, splits in task_splits.items():
        texts = [example_text(e) for e in splits["train"]]
        docs += texts
        stats["sources"][f"{task}:train"] = {"rows_read": len(texts)}
    for entry in cfg.get("unlabeled") or []:
        source = str(entry["path"])
        path = resolve(source, base_dir)
        fmt = formats.detect_format(path, entry.get("format", "auto"), kind="text")
        where = entry.get("where")
        raw = formats.read_unlabeled_text(
            path,
            fmt,
            text_column=entry.get("text_column", "text"),
            where=OmegaConf.to_container(where) if where is not None else None,
            encoding=entry.get("encoding", "utf-8"),
            label=source,
        )
        pieces = [p for text in raw for p in split_paragraphs(text, min_chars)]
        docs += pieces
        stats["sources"][source] = {"sha256": sha256_file(path), "rows_read": len(pieces)}
    docs = [d for d in docs if len(d) >= min_chars or d in held_out]
    docs, dup = dedupe([{"text": d} for d in docs])
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


def prepare_all(data_cfg: DictConfig, seed: int, prepared_dir: Path, base_dir: Path) -> dict:
    """Prepare every task and the corpus, then swap the whole folder in atomically.

    On any error nothing under `prepared_dir` changes.
    """
    task_splits: dict[str, dict[str, list[dict]]] = {}
    manifest: dict[str, Any] = {"seed": seed, "tasks": {}}
    for task in TASKS:
        splits, stats = prepare_task(task, data_cfg[task], data_cfg.split, seed, base_dir)
        task_splits[task] = splits
        manifest["tasks"][task] = stats
        log.info("%s: %s", task, stats["rows"])
    corpus, corpus_stats = build_corpus(task_splits, data_cfg.corpus, seed, base_dir)
    manifest["corpus"] = corpus_stats
    log.info("corpus: %s", corpus_stats["rows"])

    with atomic_dir(prepared_dir) as tmp:
        files: dict[str, str] = {}
        for task, splits in task_splits.items():
            for split, rows in splits.items():
                write_jsonl(tmp / task / f"{split}.jsonl", rows)
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
