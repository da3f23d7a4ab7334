"""Command `predict`: JSON lines of predictions from the exported int8 model.

Text comes from command-line arguments (after `--`, any argument is a text), else
`predict.text` (one text or a list), else `predict.file` (JSONL with a `text` field, or TXT
with one text per line), else standard input (one text per line). Every input gets exactly one
output line carrying its `index` (0-based position: argument order, or line of the file or
stdin), so output lines align with input lines; an empty text gets
`{"index": i, "error": "empty text"}` instead of a prediction, and the command then exits 1
naming the empty inputs. The model is loaded once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.sources import DataError, data_suffix, iter_lines, read_text, resolve
from emergent.errors import ConfigError, PredictionError
from emergent.schema import PredictConfig, Settings
from emergent.serving.predictor import Predictor
from emergent.stages.per_task import per_task
from emergent.tasks import Task

BATCH = 32
UTF8_HINT = "predict reads UTF-8 text: convert the file first, e.g. iconv -f latin1 -t utf-8"


def _lines(text: str) -> list[str]:
    """Every line (blank ones too, so indices are line numbers - 1), without the empty piece
    a final newline leaves."""
    lines = [line for _, line in iter_lines(text)]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _configured_texts(conf: PredictConfig) -> list[str] | None:
    value = conf.text
    if value is None:
        return None
    return list(value) if isinstance(value, list) else [value]


def read_inputs(conf: PredictConfig, texts: list[str] | None, paths: Paths) -> list[str]:
    configured = _configured_texts(conf)
    if texts and configured is not None:
        raise ConfigError(
            "predict.text", "texts given both as arguments and as predict.text: use one"
        )
    if texts:
        return list(texts)
    if configured is not None:
        return configured
    source = conf.file
    if source:
        path = resolve(str(source), paths.input_dir)
        text = read_text(path, label=str(source), hint=UTF8_HINT)
        if data_suffix(path) in {".jsonl", ".json"}:
            rows = []
            for number, line in enumerate(_lines(text), start=1):
                if not line.strip():
                    rows.append("")
                    continue
                try:
                    rows.append(str(json.loads(line)["text"]))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise DataError(
                        source, "expected a JSON object with a 'text' field", number
                    ) from err
            return rows
        return _lines(text)
    if sys.stdin is None or sys.stdin.isatty():
        raise DataError(
            "input",
            "no text given: pass texts as arguments, set predict.text=... or predict.file=..., "
            "or pipe text on standard input",
        )
    try:
        data = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError("<stdin>", f"invalid utf-8 input: {err.reason} ({UTF8_HINT})") from err
    return _lines(data)


def records(predictor: Any, inputs: list[str]) -> Iterator[dict[str, Any]]:
    """One record per input, in order: the prediction with its index, or an error record."""
    for start in range(0, len(inputs), BATCH):
        chunk = list(enumerate(inputs[start : start + BATCH], start))
        answers = iter(predictor.predict([t for _, t in chunk if t.strip()]))
        for index, text in chunk:
            if text.strip():
                yield {"index": index, **next(answers)}
            else:
                yield {"index": index, "error": "empty text"}


@per_task
def run(
    cfg: DictConfig,
    paths: Paths,
    task: Task,
    texts: list[str] | None = None,
    *,
    settings: Settings,
) -> None:
    """Print every record; then, if any input was empty, fail (exit 1) saying which, so a
    script notices even though every other input was answered."""
    configured = settings.predict.export_dir
    export_dir = Path(configured) if configured else paths.inp("models", "export", task.name)
    predictor = Predictor(export_dir, task=task.name)
    inputs = read_inputs(settings.predict, texts, paths)
    empty = []
    for record in records(predictor, inputs):
        print(json.dumps(record, ensure_ascii=False), flush=True)
        if "error" in record:
            empty.append(record["index"])
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise PredictionError(
            f"empty text at index {shown} ({len(empty)} of {len(inputs)} inputs): "
            "their output lines are error records, the other inputs were predicted"
        )
