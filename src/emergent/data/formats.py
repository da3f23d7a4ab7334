"""Readers for the supported file formats: CoNLL, JSONL, CSV/TSV and plain text.

Every reader returns plain Python records and raises `DataError` naming the file and the line
(or column) of the first problem, so a user can fix their file without reading our code.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from emergent.data.sources import DataError, data_suffix, iter_lines, read_text

NerExample = dict[str, list[str]]  # {"tokens": [...], "tags": [...]}
TextExample = dict[str, str]  # {"text": ..., "label": ...}

# A column separator of CoNLL lines without a tab: runs of ASCII spaces. A no-break space
# (U+00A0) or any other Unicode space stays inside its token.
_SPACES = re.compile(r" +")


def setting(task: str | None, key: str) -> str:
    """Where a data setting lives in the config, for error messages: `data.<task>.<key>`
    when the task is known, else a description without a placeholder."""
    return f"data.{task}.{key}" if task else f"the data source's `{key}` setting"


def encoding_hint(task: str | None) -> str:
    return f"set {setting(task, 'encoding')} if the file uses another encoding"


def detect_format(path: Path, configured: str = "auto", tokens: bool = False) -> str:
    """Pick a format from config or the file suffix (`tokens`: the data is tagged tokens,
    which disambiguates `.tsv` and `.txt`)."""
    if configured and configured != "auto":
        return configured
    suffix = data_suffix(path)
    if suffix in {".jsonl", ".json", ".ndjson"}:
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "conll" if tokens else "tsv"
    if tokens:
        # CoNLL files come with many names (eng.train, wnut17train.conll, ner.txt ...).
        return "conll"
    return "txt"


def check_tag(
    tag: str, entity_types: set[str] | None, source: str, line: int, task: str | None = None
) -> None:
    """Tags must be `O`, `B-<type>` or `I-<type>` with a known type."""
    if tag == "O":
        return
    prefix, sep, etype = tag.partition("-")
    if not sep or prefix not in {"B", "I"} or not etype:
        raise DataError(source, f"malformed tag {tag!r}: expected O, B-<type> or I-<type>", line)
    if entity_types is not None and etype not in entity_types:
        known = ", ".join(sorted(entity_types))
        raise DataError(
            source,
            f"unknown tag {tag!r}: entity type {etype!r} is not in "
            f"{setting(task, 'entity_types')} ({known})",
            line,
        )


def conll_columns(line: str) -> list[str]:
    """A CoNLL line's columns: split on tabs when it has one, else on runs of ASCII spaces."""
    if "\t" in line:
        return [c.strip(" \r") for c in line.strip(" \r\t").split("\t")]
    return _SPACES.split(line.strip())


def iob2_error(tags: list[str]) -> int | None:
    """Index of the first tag that breaks IOB2 (`I-X` not after `B-X`/`I-X`), else None."""
    previous = "O"
    for index, tag in enumerate(tags):
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return index
        previous = tag
    return None


def read_conll(
    path: Path,
    encoding: str = "utf-8",
    entity_types: Iterable[str] | None = None,
    label: str = "",
    task: str | None = None,
) -> list[NerExample]:
    """One token per line, tag in the last column, sentences separated by blank lines.

    Reads WNUT (`token<TAB>tag`) and CoNLL-2003 (`token POS chunk tag`, `-DOCSTART-` lines).
    A line with a tab is split on tabs only, so a token may contain spaces or no-break spaces
    (`New York<TAB>B-geo-loc` is the token `New York`); a line without a tab is split on runs of
    ASCII spaces. The token is the first column and the tag the last. Every token line of a file
    must have the same number of columns: a line with more (a space inside a token of a
    space-separated file) is an error naming the line, never a silently cut token.
    """
    source = label or str(path)
    types = set(entity_types) if entity_types is not None else None
    examples: list[NerExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush() -> None:
        if not tokens:
            return
        bad = iob2_error(tags)
        if bad is not None:
            raise DataError(
                source,
                f"invalid IOB2: {tags[bad]!r} follows "
                f"{tags[bad - 1] if bad else 'sentence start'!r} "
                "(an I- tag must continue a B-/I- of the same type)",
                lines[bad],
            )
        examples.append({"tokens": list(tokens), "tags": list(tags)})
        tokens.clear()
        tags.clear()
        lines.clear()

    width: tuple[int, int] | None = None  # (columns, line) of the first token line
    for number, line in iter_lines(read_text(path, encoding, source, encoding_hint(task))):
        if not line.strip():
            flush()
            continue
        columns = conll_columns(line)
        if columns[0] == "-DOCSTART-":
            flush()
            continue
        if len(columns) < 2 or not columns[0].strip():
            raise DataError(
                source, f"expected a token and a tag separated by whitespace, got {line!r}", number
            )
        if width is None:
            width = (len(columns), number)
        elif len(columns) != width[0]:
            raise DataError(
                source,
                f"{len(columns)} columns but line {width[1]} has {width[0]} ({line!r}); "
                "a token containing a space needs tab-separated columns (token<TAB>tag)",
                number,
            )
        check_tag(columns[-1], types, source, number, task)
        tokens.append(columns[0])
        tags.append(columns[-1])
        lines.append(number)
    flush()
    if not examples:
        raise DataError(source, "no sentences found")
    return examples


def _jsonl_records(
    path: Path, encoding: str, source: str, task: str | None = None
) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in iter_lines(read_text(path, encoding, source, encoding_hint(task))):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(source, f"invalid JSON: {err.msg}", number) from err
        if not isinstance(record, dict):
            raise DataError(source, "each line must be a JSON object", number)
        records.append((number, record))
    if not records:
        raise DataError(source, "no records found")
    return records


def read_ner_jsonl(
    path: Path,
    encoding: str = "utf-8",
    entity_types: Iterable[str] | None = None,
    label: str = "",
    task: str | None = None,
) -> list[NerExample]:
    """JSONL with `tokens` and `tags` (lists of equal length) per line."""
    source = label or str(path)
    types = set(entity_types) if entity_types is not None else None
    examples = []
    for number, record in _jsonl_records(path, encoding, source, task):
        for key in ("tokens", "tags"):
            if not isinstance(record.get(key), list):
                raise DataError(source, f"field {key!r} missing or not a list", number)
        tokens, tags = [str(t) for t in record["tokens"]], [str(t) for t in record["tags"]]
        if len(tokens) != len(tags):
            raise DataError(
                source, f"{len(tokens)} tokens but {len(tags)} tags (field 'tags')", number
            )
        for tag in tags:
            check_tag(tag, types, source, number, task)
        bad = iob2_error(tags)
        if bad is not None:
            raise DataError(source, f"invalid IOB2 at tag {bad} ({tags[bad]!r})", number)
        if tokens:
            examples.append({"tokens": tokens, "tags": tags})
    return examples


def read_table(
    path: Path, fmt: str, encoding: str = "utf-8", label: str = "", task: str | None = None
) -> pd.DataFrame:
    """CSV/TSV as strings; the first row is the header. The index holds each row's 1-based
    line number in the file (where the row starts), so errors point at the right line even
    after a quoted field spanning several lines."""
    source = label or str(path)
    text = read_text(path, encoding, source, encoding_hint(task))
    sep = "\t" if fmt == "tsv" else ","
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=sep,
        quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
        strict=True,
    )
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        for row in reader:
            if any(field.strip() for field in row):
                if header is None:
                    header = row
                    _check_header(header, fmt, source, task, start)
                elif len(row) != len(header):
                    raise DataError(
                        source,
                        f"{len(row)} fields but the header has {len(header)} "
                        f"({', '.join(header)})"
                        + (" (quote fields that contain a comma)" if sep == "," else ""),
                        start,
                    )
                else:
                    rows.append(row)
                    lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(source, f"cannot parse as {fmt.upper()}: {err}", start) from err
    if header is None or not rows:
        raise DataError(source, "no rows after the header")
    return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=str)


def _check_header(header: list[str], fmt: str, source: str, task: str | None, line: int) -> None:
    if fmt == "csv" and len(header) == 1 and "\t" in header[0]:
        raise DataError(
            source,
            f"looks tab-separated (one CSV column {header[0]!r}): "
            f"set {setting(task, 'format')}=tsv",
            line,
        )
    duplicates = sorted({c for c in header if c and header.count(c) > 1})
    if duplicates:
        raise DataError(source, f"duplicate column name(s) {duplicates} in the header", line)


def require_columns(
    frame: pd.DataFrame,
    columns: Iterable[str],
    source: str,
    task: str | None = None,
    keys: str = "text_column / label_column",
) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        where = f"data.{task}.{keys}" if task else f"the {keys} setting"
        raise DataError(
            source, f"missing column(s) {missing}; the file has {list(frame.columns)} (set {where})"
        )


def map_labels(
    rows: Iterable[tuple[int, str, str]],
    label_map: Mapping[str | int, str | int] | None,
    skip_labels: Iterable[str | int],
    source: str,
    task: str | None = None,
) -> tuple[list[TextExample], int]:
    """Apply the label mapping; returns examples and the number of skipped rows."""
    # Labels are compared as strings: a map written on the command line
    # (`{0: negative, 1: positive}`) has integer keys, a file's labels are always text.
    skip = {str(s).strip() for s in skip_labels or []}
    if label_map is not None:
        label_map = {str(k).strip(): str(v) for k, v in label_map.items()}
    examples, skipped = [], 0
    for line, text, raw in rows:
        raw = raw.strip()
        if raw in skip:
            skipped += 1
            continue
        if label_map is not None:
            if raw not in label_map:
                raise DataError(
                    source,
                    f"label {raw!r} is not in {setting(task, 'label_map')} "
                    f"({sorted(label_map)}) nor in skip_labels",
                    line,
                )
            raw = str(label_map[raw])
        if not raw:
            raise DataError(source, "empty label", line)
        examples.append({"text": text, "label": raw})
    return examples, skipped


def read_labeled_text(
    path: Path,
    fmt: str,
    text_column: str = "text",
    label_column: str = "label",
    label_map: Mapping[str | int, str | int] | None = None,
    skip_labels: Iterable[str | int] = (),
    encoding: str = "utf-8",
    label: str = "",
    task: str | None = None,
) -> tuple[list[TextExample], int]:
    """Text classification examples from CSV/TSV (configured columns) or JSONL (`text`/`label`)."""
    source = label or str(path)
    if fmt == "jsonl":
        rows = []
        for number, record in _jsonl_records(path, encoding, source, task):
            for key in (text_column, label_column):
                if key not in record:
                    raise DataError(source, f"field {key!r} missing", number)
            rows.append((number, str(record[text_column]), str(record[label_column])))
    elif fmt in {"csv", "tsv"}:
        frame = read_table(path, fmt, encoding, source, task)
        require_columns(frame, [text_column, label_column], source, task)
        rows = list(zip(frame.index, frame[text_column], frame[label_column], strict=True))
    else:
        raise DataError(source, f"format {fmt!r} cannot hold labeled text (use csv, tsv, jsonl)")
    return map_labels(rows, label_map, skip_labels, source, task)


def read_unlabeled_text(
    path: Path,
    fmt: str,
    text_column: str = "text",
    where: Mapping[str, Any] | None = None,
    encoding: str = "utf-8",
    label: str = "",
    task: str | None = None,
) -> list[str]:
    """Unlabeled documents: TXT (one per line), CSV/TSV (a column, optionally filtered), JSONL.

    `task` is where the source sits under `data.` (e.g. `corpus.unlabeled[1]`), for messages."""
    source = label or str(path)
    if fmt == "txt":
        text = read_text(path, encoding, source, encoding_hint(task))
        return [line for _, line in iter_lines(text)]
    if fmt == "jsonl":
        return [
            str(r[text_column])
            for _, r in _jsonl_records(path, encoding, source, task)
            if text_column in r and all(str(r.get(k)) == str(v) for k, v in (where or {}).items())
        ]
    if fmt == "conll":
        return [" ".join(e["tokens"]) for e in read_conll(path, encoding, None, source, task)]
    frame = read_table(path, fmt, encoding, source, task)
    require_columns(frame, [text_column, *(where or {})], source, task, "text_column / where")
    for key, value in (where or {}).items():
        frame = frame[frame[key] == str(value)]
    return frame[text_column].tolist()
