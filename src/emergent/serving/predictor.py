"""Prediction from an exported package (`models/{task}/export/`): int8 ONNX + tokenizer + labels.

Loaded once per process. NER returns entities with type, character offsets into the original
text and a score (sub-tokens merged into words, words into B-/I- spans); sentiment returns the
label and class probabilities.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from emergent.export.onnx import session

log = logging.getLogger(__name__)


class PredictionError(ValueError):
    """Input the model cannot take (empty text, ...): a message for the user, not a crash."""


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def spans(labels: list[str], words: list[tuple[int, int, str, float]], text: str) -> list[dict]:
    """Word tags -> entity spans. An I- tag that does not continue its type starts a new span."""
    entities: list[dict] = []
    current: dict | None = None
    for start, end, tag, prob in words:
        kind = tag[2:] if tag != "O" else None
        if kind is None:
            current = None
            continue
        if tag.startswith("B-") or current is None or current["type"] != kind:
            current = {"type": kind, "start": start, "end": end, "probs": [prob]}
            entities.append(current)
        else:
            current["end"] = end
            current["probs"].append(prob)
    return [
        {
            "type": e["type"],
            "start": e["start"],
            "end": e["end"],
            "text": text[e["start"] : e["end"]],
            "score": round(float(np.mean(e["probs"])), 4),
        }
        for e in entities
    ]


class Predictor:
    def __init__(self, export_dir: Path, task: str | None = None, threads: int | None = None):
        from emergent.models.backbone import load_tokenizer

        export_dir = Path(export_dir)
        meta_path = export_dir / "export.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{export_dir} is not an export package: run export@<task>")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.task = task or meta["task"]
        self.max_length = int(meta["max_length"])
        self.labels: list[str] = json.loads((export_dir / "labels.json").read_text())
        self.tokenizer = load_tokenizer(export_dir)
        self.session = session(export_dir / "model.int8.onnx", threads)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise PredictionError(f"input {index}: empty text; nothing to predict")
        lengths = self.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
        for index, ids in enumerate(lengths):
            if len(ids) > self.max_length:
                log.warning(
                    "input %d has %d tokens; truncated to max_length=%d (the rest is not analysed)",
                    index,
                    len(ids),
                    self.max_length,
                )
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_offsets_mapping=self.task == "ner",
            return_tensors="np",
        )
        logits = self.session.run(
            ["logits"],
            {
                "input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64),
            },
        )[0]
        probs = softmax(logits.astype(np.float64))
        if self.task != "ner":
            return [
                {
                    "label": self.labels[int(p.argmax())],
                    "probabilities": {
                        lab: round(float(x), 4) for lab, x in zip(self.labels, p, strict=True)
                    },
                }
                for p in probs
            ]
        results = []
        for row, text in enumerate(texts):
            words: dict[int, list] = {}
            for pos, word in enumerate(enc.word_ids(row)):
                if word is None:
                    continue
                start, end = (int(x) for x in enc["offset_mapping"][row][pos])
                if word not in words:
                    tag = int(probs[row, pos].argmax())
                    words[word] = [start, end, self.labels[tag], float(probs[row, pos, tag])]
                else:
                    words[word][1] = end
            ordered = [tuple(words[w]) for w in sorted(words)]
            results.append({"text": text, "entities": spans(self.labels, ordered, text)})
        return results
