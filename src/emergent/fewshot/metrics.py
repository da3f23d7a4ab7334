"""Accuracy and the continuous metrics beside it: gold log-probability, Brier score, ECE.

Continuous metrics move before accuracy does, which is what an emergence curve needs to show.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from emergent.evaluation.bootstrap import Bootstrap, interval


def classification_metrics(
    probs: torch.Tensor,
    gold: torch.Tensor,
    gold_word_logprob: torch.Tensor | None = None,
    bootstrap: Bootstrap | None = None,
) -> dict[str, float]:
    """`probs` [N, C] label distribution, `gold` [N] label indices.

    gold_logprob: mean log p(gold label) under the label distribution; gold_word_logprob
    (cloze methods): mean log p(gold verbalizer word) over the whole vocabulary. With
    `bootstrap`: `accuracy_ci_low/_high`, the interval over the test texts (a zero-shot method
    runs once, so seeds give it no spread; the test subset's size still does).
    """
    probs = probs.float()
    onehot = torch.nn.functional.one_hot(gold, probs.size(1)).float()
    correct = (probs.argmax(-1) == gold).float()
    metrics = {
        "accuracy": float(correct.mean()),
        "gold_logprob": float(probs.gather(1, gold[:, None]).clamp_min(1e-12).log().mean()),
        "brier": float(((probs - onehot) ** 2).sum(-1).mean()),
        "ece": float(
            multiclass_calibration_error(probs, gold, num_classes=probs.size(1), n_bins=10)
        ),
    }
    if gold_word_logprob is not None:
        metrics["gold_word_logprob"] = float(gold_word_logprob.float().mean())
    if bootstrap is not None and len(correct) > 1:
        counts = torch.stack([correct, torch.ones_like(correct)], -1).numpy()
        low, high = interval(lambda t: t[..., 0] / t[..., 1], [counts], bootstrap)
        metrics.update(accuracy_ci_low=low, accuracy_ci_high=high)
    return metrics
