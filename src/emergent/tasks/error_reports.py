"""Error reports: the worst misclassified test examples, for reading rather than counting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def token_errors(
    examples: Sequence[dict],
    pred_tags: Sequence[Sequence[str]],
    confidences: Sequence[Sequence[float]],
    limit: int,
) -> list[dict[str, Any]]:
    """Sentences with the most wrongly tagged words first (ties: least confident first)."""
    rows = []
    for index, (example, pred, conf) in enumerate(
        zip(examples, pred_tags, confidences, strict=True)
    ):
        wrong = [i for i, (g, p) in enumerate(zip(example["tags"], pred, strict=True)) if g != p]
        if not wrong:
            continue
        rows.append(
            {
                "index": index,
                "errors": len(wrong),
                "min_confidence": round(min(conf) if conf else 1.0, 4),
                "text": " ".join(example["tokens"]),
                "mistakes": [
                    {"token": example["tokens"][i], "gold": example["tags"][i], "pred": pred[i]}
                    for i in wrong
                ],
            }
        )
    rows.sort(key=lambda r: (-r["errors"], r["min_confidence"]))
    return rows[:limit]


def classification_errors(
    examples: Sequence[dict],
    labels: Sequence[str],
    pred: Sequence[int],
    probs: Sequence[Sequence[float]],
    limit: int,
) -> list[dict[str, Any]]:
    """Misclassified texts, the most confidently wrong first."""
    rows = []
    for index, (example, p, prob) in enumerate(zip(examples, pred, probs, strict=True)):
        if labels[p] == str(example["label"]):
            continue
        rows.append(
            {
                "index": index,
                "text": example["text"],
                "gold": str(example["label"]),
                "pred": labels[p],
                "confidence": round(float(max(prob)), 4),
                "probabilities": {
                    label: round(float(x), 4) for label, x in zip(labels, prob, strict=True)
                },
            }
        )
    rows.sort(key=lambda r: -r["confidence"])
    return rows[:limit]
