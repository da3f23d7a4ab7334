"""User feedback as an extra source of a task (`data.<task>.feedback`).

The feedback folder holds `train.jsonl` and `test.jsonl`, one example per line in the task's
own prepared shape (`{"text", "label"}` or `{"tokens", "tags"}`, nothing else), as the
feedback export writes them under `data/feedback/<task>/`. Ingest joins the train examples to
the task's train split, less any whose dedupe key (`Task.key`) is in the validation or test
split (a model must not train on what it is scored on) or already in train; the test examples
become `<prepared>/<task>/feedback_test.jsonl`, less any in train, which the promotion gate
scores beside the test split. Neither joins the MLM corpus, so new feedback re-runs the
task's fine-tuning and not pretraining. The quality gate checks that split like the others, and the
manifest records the counts and the files' sha256 (`feedback.<task>`), which the export
stage copies onto the registered version as its lineage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emergent.data.dedupe import dedupe
from emergent.data.layout import FEEDBACK_TEST, HELD_OUT
from emergent.data.protocols import PreparedTask
from emergent.errors import DataError
from emergent.io import read_jsonl, sha256_file, under

log = logging.getLogger(__name__)

FILES = ("train", "test")


def read_feedback(task: PreparedTask, path: Path, normalize: Callable[[str], str]) -> list[dict]:
    """The normalised examples of one feedback file (none when the file is absent: the
    export writes a split only once it holds an example); a line of another shape is a
    DataError naming the file, the line and the field."""
    if not path.is_file():
        return []
    fields = tuple(task.example_fields)
    examples = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row, dict) or set(row) != set(fields):
            found = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(
                path, f"expected exactly the fields {list(fields)} of task {task.name!r}, "
                f"got {found}", number,
            )  # fmt: skip
        example = task.normalize(row, normalize)
        if example is not None:
            examples.append(example)
    return examples


def add_feedback(
    task: PreparedTask,
    source: str,
    splits: dict[str, list[dict]],
    normalize: Callable[[str], str],
    base_dir: Path,
) -> dict[str, Any]:
    """Join the feedback in folder `source` to `splits` in place (the kept train examples
    are appended after the task's own, `feedback_test` is added) and return its manifest
    entry."""
    folder = under(base_dir, source)
    if not folder.is_dir():
        raise DataError(
            folder, f"data.{task.name}.feedback: no such folder (it must hold train.jsonl and/or "
            "test.jsonl; null: no feedback)",
        )  # fmt: skip
    read = {f: read_feedback(task, folder / f"{f}.jsonl", normalize) for f in FILES}
    held = {task.key(e) for split in HELD_OUT for e in splits[split]}
    train_keys = {task.key(e) for e in splits["train"]}
    joined, removed = dedupe(read["train"], task.key, held | train_keys)
    splits["train"] = splits["train"] + joined
    train_keys |= {task.key(e) for e in joined}
    feedback_test, test_removed = dedupe(read["test"], task.key, train_keys)
    splits[FEEDBACK_TEST] = feedback_test
    entry: dict[str, Any] = {
        "source": source,
        # what the model trained on: the registered version's `feedback_sha256`
        "sha256": _digest(folder / "train.jsonl"),
        "test_sha256": _digest(folder / "test.jsonl"),
        "rows_read": {f: len(read[f]) for f in FILES},
        "train": len(joined),
        "test": len(feedback_test),
        "removed": {
            "train_overlapping_heldout_or_train": removed,
            "test_overlapping_train": test_removed,
        },
    }
    log.info("%s feedback from %s: %s", task.name, folder, entry)
    return entry


def _digest(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None
