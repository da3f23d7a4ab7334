"""Turning model outputs into task predictions and scores (shared by training, evaluate and
export): word-level tags for NER (first sub-token of each word), a label for sentiment."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from emergent.evaluation.metrics import classification_metrics, headline, ner_metrics


def word_positions(batch: dict[str, Any], row: int) -> np.ndarray:
    """Token positions that carry a word's prediction (first sub-token of each word)."""
    if "first" in batch:
        return np.flatnonzero(np.asarray(batch["first"][row]))
    return np.flatnonzero(np.asarray(batch["labels"][row]) != -100)


def decode(
    task: str, logits: torch.Tensor | np.ndarray, batch: dict[str, Any]
) -> tuple[list[list[int]], list[list[int]], list[list[float]]]:
    """Gold ids, predicted ids and probabilities, one list per example.

    Probabilities: NER, the predicted tag's probability per word; sentiment, the full class
    distribution (so error reports can show it).
    """
    scores = (
        torch.as_tensor(np.asarray(logits, dtype=np.float32))
        if not isinstance(logits, torch.Tensor)
        else logits.detach().float()
    )
    probs = scores.softmax(-1).numpy()
    labels = np.asarray(batch["labels"])
    gold, pred, conf = [], [], []
    for row in range(len(probs)):
        if task == "ner":
            pos = word_positions(batch, row)
            p = probs[row, pos]
            gold.append(labels[row, pos].tolist())
        else:
            p = probs[row][None, :]
            gold.append([int(labels[row])])
        pred.append(p.argmax(-1).tolist())
        conf.append(p.max(-1).tolist() if task == "ner" else p[0].tolist())
    return gold, pred, conf


def score(
    task: str, labels: Sequence[str], gold: Sequence[Sequence[int]], pred: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """Task metrics from id sequences, plus `headline` (entity F1 / macro F1)."""
    if task == "ner":
        metrics = ner_metrics(
            [[labels[i] for i in g] for g in gold], [[labels[i] for i in p] for p in pred]
        )
    else:
        metrics = classification_metrics([g[0] for g in gold], [p[0] for p in pred], labels)
    metrics["headline"] = headline(task, metrics)
    return metrics


def run_batches(
    forward: Callable[[dict[str, Any]], Any], batches: Iterable[dict[str, Any]], task: str
) -> tuple[list[list[int]], list[list[int]], list[list[float]]]:
    """Apply a forward function (torch or ONNX) over batches and decode every example."""
    gold: list[list[int]] = []
    pred: list[list[int]] = []
    conf: list[list[float]] = []
    with torch.inference_mode():
        for batch in batches:
            g, p, c = decode(task, forward(batch), batch)
            gold += g
            pred += p
            conf += c
    return gold, pred, conf


def align_to_words(
    gold_words: Sequence[Sequence[int]], pred: Sequence[Sequence[int]], outside: int = 0
) -> list[list[int]]:
    """Predictions for every word of the original sentences: words cut off by truncation are
    predicted `O` (so truncation costs recall instead of silently shrinking the test set)."""
    return [list(p) + [outside] * (len(g) - len(p)) for g, p in zip(gold_words, pred, strict=True)]
