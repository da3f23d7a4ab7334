"""Prediction from an exported package (`models/export/<task>/`): int8 ONNX, the tokenizer,
the labels and the task's definition. Loaded once per process; no torch, no transformers:
the tokenizer is the `tokenizers` library's own (tokenizer.json).

The task turns probabilities into answers: NER gives entities with type, character offsets
into the original text and a score; sequence tasks give the label and class probabilities.
Long texts of windowed tasks (NER) are split into overlapping windows so every word is
predicted; other tasks truncate, with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from emergent.errors import PredictionError, StageError
from emergent.serving.package import MODEL_FILE, ExportInfo
from emergent.serving.runtime import session
from emergent.tasks import Task, Window, task_from_spec
from emergent.tasks.base import softmax
from emergent.tasks.shapes import INPUT as SHAPES_INPUT
from emergent.tasks.shapes import text_shapes
from emergent.tasks.windows import clamp_stride

log = logging.getLogger(__name__)


def load_package(export_dir: Path) -> tuple[ExportInfo, list[str], Task]:
    """export.json, labels.json and the task of an export package, or a clear error."""
    export_dir = Path(export_dir)
    meta = ExportInfo.load(export_dir)
    try:
        labels = json.loads((export_dir / "labels.json").read_text(encoding="utf-8"))
        task = task_from_spec(meta.task_spec)
    except (OSError, ValueError, KeyError) as err:
        raise StageError(f"{export_dir}: unreadable export package ({err})") from err
    return meta, labels, task


class Predictor:
    """Predictions of one exported task model."""

    def __init__(self, export_dir: Path, task: str | None = None, threads: int | None = None):
        from tokenizers import Tokenizer

        self.export_dir = Path(export_dir)
        meta, self.labels, self.task = load_package(self.export_dir)
        if task is not None and task != self.task.name:
            raise StageError(
                f"{self.export_dir} holds a {self.task.name!r} model, not {task!r}: "
                f"pass task={self.task.name} or point predict.export_dir at a {task} package"
            )
        self.meta = meta
        self.max_length = meta.max_length
        for required in (MODEL_FILE, "tokenizer.json"):
            if not (self.export_dir / required).is_file():
                raise StageError(f"{self.export_dir} has no {required}: re-run export")
        self.tokenizer = Tokenizer.from_file(str(self.export_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        stride = clamp_stride(getattr(self.task, "stride", 0), self.max_length)
        self.tokenizer.enable_truncation(
            self.max_length, stride=stride if self.task.windowed else 0
        )
        self.pad_id = meta.pad_token_id
        self.session = session(self.export_dir / MODEL_FILE, threads)
        # A model with word shapes takes them as a third input; the server computes them from
        # the raw text with the training path's own function (emergent.tasks.shapes).
        self.reads_shapes = SHAPES_INPUT in {i.name for i in self.session.get_inputs()}

    def encode(self, texts: list[str]) -> list[list[Any]]:
        """Per text, its windows (`tokenizers` Encodings): one, or several for long texts of
        windowed tasks."""
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise PredictionError(f"input {index}: empty text; nothing to predict")
        encodings = self.tokenizer.encode_batch(texts)
        windows = []
        for index, enc in enumerate(encodings):
            if enc.overflowing and not self.task.windowed:
                log.warning(
                    "input %d is longer than max_length=%d tokens; truncated (the rest is not "
                    "analysed)",
                    index,
                    self.max_length,
                )
            windows.append([enc, *enc.overflowing] if self.task.windowed else [enc])
        return windows

    def probabilities(
        self, encodings: list[Any], texts: list[str] | None = None
    ) -> list[np.ndarray]:
        """One ONNX Runtime call over all windows, padded to the longest of them (`texts`:
        each window's raw text, for a model that reads word shapes)."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.reads_shapes:
            if texts is None:
                raise PredictionError("this model reads word shapes: pass each window's text")
            shapes = np.zeros((len(encodings), width), dtype=np.int64)
            for i, (e, text) in enumerate(zip(encodings, texts, strict=True)):
                shapes[i, : len(e.ids)] = text_shapes(text, e.word_ids, e.offsets)
            feeds[SHAPES_INPUT] = shapes
        logits = self.session.run(["logits"], feeds)[0]
        probs = softmax(logits.astype(np.float64))
        return [
            probs[i, : len(e.ids)] if probs.ndim == 3 else probs[i] for i, e in enumerate(encodings)
        ]

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One answer per text (the task's shape), with the text echoed."""
        if not texts:
            return []
        per_text = self.encode(texts)
        flat = [e for windows in per_text for e in windows]
        window_texts = [t for t, windows in zip(texts, per_text, strict=True) for _ in windows]
        probs = self.probabilities(flat, window_texts)
        results, k = [], 0
        for text, windows in zip(texts, per_text, strict=True):
            ws = [Window(probs[k + j], e.word_ids, e.offsets) for j, e in enumerate(windows)]
            k += len(windows)
            results.append({"text": text, **self.task.respond(text, ws, self.labels)})
        return results
