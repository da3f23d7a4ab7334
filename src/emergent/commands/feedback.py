"""Command `feedback export`: labelled feedback from the service's store, as data.

  python -m emergent feedback export task=<t>

Reads the store configured in `serve.store` (the SQLite file, or `feedback_uri`'s PostgreSQL)
and writes `<feedback.dir>/<t>/train.jsonl` and `test.jsonl` (under the project root, where
ingest reads them) with the examples in the task's own shape, de-duplicated by content (the
first sent wins), in the order they arrived. An example's split comes from its content hash
(`int(sha256[:8], 16) % 100 < feedback.test_percent` goes to test), so an example never changes
split as more feedback arrives. `summary.json` beside them holds the counts, the last feedback
id read and each file's sha256. No feedback for the task is one line, not an error.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.errors import StageError
from emergent.schema import Settings

FILES = ("train", "test")


def run(
    cfg: DictConfig, paths: Paths, argv: list[str] | None = None, *, settings: Settings
) -> None:
    if list(argv or []) != ["export"]:
        got = " ".join(argv or []) or "nothing"
        raise StageError(f"feedback: use `feedback export task=<task>` (got {got})")
    from emergent.tasks import get_task

    task = get_task(cfg, str(settings.task))
    export(settings, paths, task.name, task.example_fields)


def export(settings: Settings, paths: Paths, task: str, fields: tuple[str, ...]) -> None:
    """Write the task's feedback as train/test JSONL and a summary; prints one line a file."""
    from contextlib import closing

    from emergent.io import sha256_file, under, write_json, write_jsonl
    from emergent.serving.feedback import FeedbackStore, FeedbackStoreError, split_examples

    store_cfg = settings.serve.store
    uri = store_cfg.feedback_uri
    db = under(paths.input_dir, store_cfg.path)
    if not uri and not db.is_file():
        print(f"no feedback for task {task}: no request store at {db} yet")
        return
    try:
        with closing(FeedbackStore.open(uri, db)) as store:
            where, rows = store.describe(), store.examples(task)
    except FeedbackStoreError as err:
        raise StageError(str(err)) from err
    if not rows:
        print(f"no feedback for task {task} in {where}")
        return
    percent = settings.feedback.test_percent
    train, test = split_examples(rows, fields, percent)
    out = under(paths.input_dir, settings.feedback.dir) / task
    written: dict[str, Path] = {}
    for name, examples in zip(FILES, (train, test), strict=True):
        written[name] = out / f"{name}.jsonl"
        write_jsonl(written[name], examples)
        print(f"wrote {len(examples)} examples to {written[name]}")
    summary = {
        "task": task,
        "store": where,
        "received": len(rows),
        "duplicates": len(rows) - len(train) - len(test),
        "train": len(train),
        "test": len(test),
        "test_percent": percent,
        "last_feedback_id": max(r.id for r in rows),
        "sha256": {f"{n}.jsonl": sha256_file(p) for n, p in written.items()},
    }
    write_json(out / "summary.json", summary)
    print(f"wrote {out / 'summary.json'}")
