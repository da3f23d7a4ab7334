"""Atomic file writes, hashing and configured paths: a crash or bad input never leaves a
half-written output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from emergent.errors import DataError, StageError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

T = TypeVar("T")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o644)  # mkstemp creates 0600; outputs should be readable like any file
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_record(path: Path, adapter: TypeAdapter[T], what: str, again: str) -> T:
    """The JSON file at `path` as the typed record `adapter` validates, or one line naming the
    file and its first bad field: `field parity.atol: Field required (and 2 more); <again>`.

    `what` names the record for a file that is not one at all (`a training summary`), `again`
    says how to make the file again. The stages' own outputs (training.json, export.json) are
    read this way, so an old or foreign file is refused before anything uses it.
    """
    from pydantic import ValidationError

    text = path.read_text(encoding="utf-8")
    try:
        return adapter.validate_json(text)  # JSON mode: a string is an enum member, etc.
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "json_invalid":  # pydantic's message gives no line; json's does
            try:
                json.loads(text)
            except json.JSONDecodeError as bad:
                raise StageError(f"{path}: not valid JSON ({bad.msg}, line {bad.lineno})") from err
        where = ".".join(str(part) for part in first["loc"])
        more = err.error_count() - 1
        tail = f" (and {more} more)" if more else ""
        subject = f"field {where}" if where else f"not {what} of this version"
        raise StageError(f"{path}: {subject}: {first['msg']}{tail}; {again}") from err


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSONL file; a truncated or corrupted line is a `DataError`
    naming the file and line (never a bare JSONDecodeError traceback)."""
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        try:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(
                        path,
                        f"invalid JSON ({err.msg}); the file is truncated or corrupted",
                        number,
                    ) from err
        except UnicodeDecodeError as err:
            raise DataError(path, f"not UTF-8 text ({err.reason})") from err
    return rows


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling; swap it in whole only if the block succeeds.

    The previous contents stay untouched until the new directory is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def under(root: Path, path: str | Path) -> Path:
    """A configured path: as given when absolute, else relative to the project `root`."""
    path = Path(path)
    return path if path.is_absolute() else root / path
