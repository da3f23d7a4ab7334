"""Metric glue over the field's libraries: seqeval for entities (strict IOB2), scikit-learn
for classification. The same functions serve validation during fine-tuning, the evaluate
stage and the export parity gate (through the task), so a number means the same thing
everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def entity_metrics(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Micro precision/recall/F1 over entities (strict IOB2) and token accuracy; per type."""
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import IOB2

    y_true = [list(t) for t in true_tags]
    y_pred = [list(p) for p in pred_tags]
    for index, (t, p) in enumerate(zip(y_true, y_pred, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {index}: {len(t)} gold tags but {len(p)} predicted")
    report = classification_report(
        y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        name: {
            "precision": float(scores["precision"]),
            "recall": float(scores["recall"]),
            "f1": float(scores["f1-score"]),
            "support": int(scores["support"]),
        }
        for name, scores in sorted(report.items())
        if not name.endswith(" avg")
    }
    metrics = {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": float(accuracy_score(y_true, y_pred)) if any(y_true) else 0.0,
    }
    return metrics, per_type


def conlleval_f1(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> float:
    """Micro entity F1 in conlleval's convention (seqeval's default mode, what published
    CoNLL figures use): an `I-X` that continues no `X` still starts an entity, where strict
    IOB2 (`entity_metrics`) drops it. The two agree on well-formed tags."""
    from seqeval.metrics import f1_score

    return float(f1_score([list(t) for t in true_tags], [list(p) for p in pred_tags]))


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, Any]]:
    """Accuracy and macro precision/recall/F1; per-class scores; the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(labels)
    if not y_true:
        zeros = {"accuracy": 0.0, "precision_macro": 0.0, "recall_macro": 0.0, "f1_macro": 0.0}
        return zeros, {}, {"labels": labels, "matrix": [[0] * len(labels) for _ in labels]}
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
    }
    per_class = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, label in enumerate(labels)
    }
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return metrics, per_class, {"labels": labels, "matrix": matrix.tolist()}


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's and seqeval's
    `zero_division=0`)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def precision_recall_f1(
    tp: np.ndarray, predicted: np.ndarray, gold: np.ndarray
) -> dict[str, np.ndarray]:
    """Precision, recall and F1 from true positives, predicted and gold counts (F1 =
    2 tp / (predicted + gold), the harmonic mean of the two), elementwise: the bootstrap scores
    a thousand resampled totals at once (the functions above score one set of predictions)."""
    return {
        "precision": ratio(tp, predicted),
        "recall": ratio(tp, gold),
        "f1": ratio(2 * np.asarray(tp), np.asarray(predicted) + np.asarray(gold)),
    }
