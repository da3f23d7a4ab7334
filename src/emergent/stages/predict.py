"""Command `predict`: JSON lines of predictions from the exported int8 model.

Text comes from command-line arguments, else `predict.file` (JSONL with a `text` field, or TXT
with one text per line), else standard input. The model is loaded once per process.
"""

from __future__ import annotations

import json
import sys

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.sources import DataError, data_suffix, iter_lines, read_text, resolve
from emergent.serving.predictor import Predictor
from emergent.tasks import Task


def read_inputs(cfg: DictConfig, texts: list[str] | None, paths: Paths) -> list[str]:
    if texts:
        return list(texts)
    source = cfg.predict.get("file")
    if source:
        path = resolve(str(source), paths.input_dir)
        text = read_text(path, label=str(source))
        if data_suffix(path) in {".jsonl", ".json"}:
            rows = []
            for number, line in iter_lines(text):
                if not line.strip():
                    continue
                try:
                    rows.append(str(json.loads(line)["text"]))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise DataError(
                        source, "expected a JSON object with a 'text' field", number
                    ) from err
            return rows
        return [line for _, line in iter_lines(text) if line.strip()]
    if sys.stdin is None or sys.stdin.isatty():
        raise DataError(
            "input",
            "no text given: pass texts as arguments, set predict.file=..., "
            "or pipe text on standard input",
        )
    try:
        data = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError("<stdin>", f"invalid utf-8 input: {err.reason}") from err
    return [line for line in data.splitlines() if line.strip()]


def run(cfg: DictConfig, paths: Paths, task: Task, texts: list[str] | None = None) -> None:
    export_dir = cfg.predict.get("export_dir") or paths.inp("models", "export", task.name)
    predictor = Predictor(export_dir, task=task.name)
    inputs = read_inputs(cfg, texts, paths)
    for start in range(0, len(inputs), 32):
        for row in predictor.predict(inputs[start : start + 32]):
            print(json.dumps(row, ensure_ascii=False))
