"""The prepared-data layout, in one place: what ingest writes and every stage reads.

```
<prepared>/<task>/{train,validation,test}.jsonl   one example per line
<prepared>/<task>/feedback_test.jsonl              held-out user feedback (`data.<task>.feedback`)
<prepared>/corpus/{train,validation}.txt          the MLM corpus, one paragraph per line
<prepared>/manifest.json                          seed, counts, sha256 of every file above
```

A leaf (it imports only `emergent.io` and `emergent.errors`), so a stage that only reads a
split does not depend on how the splits are made (`emergent.data.prepare`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emergent.errors import DataError
from emergent.io import read_jsonl, sha256_file

SPLITS = ("train", "validation", "test")
HELD_OUT = SPLITS[1:]  # what choices are made on (validation) and what is reported (test)
# The test half of a task's user feedback: never trained on, scored by the promotion gate
# beside the test split (`emergent.registry.gate`).
FEEDBACK_TEST = "feedback_test"
MANIFEST = "manifest.json"


def split_path(prepared_dir: Path, task: str, split: str) -> Path:
    """The JSON-lines file of one split of one task."""
    return Path(prepared_dir) / task / f"{split}.jsonl"


def corpus_path(prepared_dir: Path, split: str) -> Path:
    """The MLM corpus text of one split (`train` or `validation`)."""
    return Path(prepared_dir) / "corpus" / f"{split}.txt"


def read_corpus(path: Path) -> list[str]:
    """The non-empty lines of a corpus file. Here, not in `data/mlm.py`, so the tokenizer
    stage (and the export's vocabulary pruning) read it without importing torch/Lightning."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the ingest stage first")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def manifest_path(prepared_dir: Path) -> Path:
    """`manifest.json`: what ingest wrote, with a sha256 per file (the data's identity)."""
    return Path(prepared_dir) / MANIFEST


def load_task_split(prepared_dir: Path, task: str, split: str) -> list[dict]:
    """The examples of one split, or a clear error when ingest has not written it."""
    path = split_path(prepared_dir, task, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the ingest stage first (dvc repro ingest)")
    return read_jsonl(path)


def verify_prepared(prepared_dir: Path) -> dict[str, Any]:
    """The manifest of `prepared_dir`, after checking that every file it lists still has the
    sha256 ingest recorded: an edited, truncated or missing prepared file is a DataError
    naming it, so the quality gate never passes data ingest did not write."""
    prepared_dir = Path(prepared_dir)
    path = manifest_path(prepared_dir)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except FileNotFoundError as err:
        raise DataError(path, "not found: run the ingest stage first") from err
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"unreadable manifest ({err}): re-run ingest") from err
    for name, digest in files.items():
        listed = prepared_dir / name
        if not listed.is_file():
            raise DataError(listed, "listed in manifest.json but missing: re-run ingest")
        if sha256_file(listed) != digest:
            raise DataError(
                listed,
                "changed since ingest wrote it (its sha256 differs from manifest.json): "
                "re-run ingest rather than editing prepared data",
            )
    return manifest


def feedback_seen(manifest: Path, task: str) -> dict[str, Any] | None:
    """The user feedback a model trained on this prepared data saw: the manifest's
    `tasks.<task>.feedback` entry (ingest writes it with `data.<task>.feedback`: the train
    file's sha256, the examples that joined train, ...), None without any or without a
    manifest. The export stage tags the registered version with it (its lineage)."""
    if not Path(manifest).is_file():
        return None
    tasks = json.loads(Path(manifest).read_text(encoding="utf-8")).get("tasks", {})
    entry = tasks.get(task, {}).get("feedback")
    return dict(entry) if entry else None
