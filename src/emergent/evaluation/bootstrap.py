"""How sure is a test figure? Percentile bootstrap over test examples (scipy.stats.bootstrap).

A test split of 230 sentences or 1,275 reviews gives one number, and two runs of the same
recipe differ by a point or more. Every headline metric here (accuracy, micro entity F1,
macro F1, ...) is a function of counts that add up over examples, so a task hands over one
row of counts per example (`Task.outcome_counts`) and the resampling sums rows: a thousand
resamples take milliseconds instead of a thousand metric calls. A paired interval (the same
resampled examples for both models) is what a drop between two models on one test set needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from emergent.schema import Settings
    from emergent.tasks import Task


@dataclass(frozen=True)
class Bootstrap:
    """`evaluate.bootstrap` in config: resamples, confidence level, seed."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Bootstrap:
        """From the validated config: `evaluate.bootstrap` and the run's `seed`."""
        section = settings.evaluate.bootstrap
        return cls(section.resamples, section.confidence, settings.seed)


def interval(
    statistic: Callable[..., np.ndarray],
    counts: Sequence[np.ndarray],
    settings: Bootstrap,
) -> tuple[float, float]:
    """Percentile interval of `statistic(*totals)` where each total sums the rows of one
    array in `counts` ([examples, k] each, row i = example i) over the same resampled
    examples. `statistic` takes totals shaped [..., k] and returns values shaped [...]."""
    from scipy.stats import bootstrap

    arrays = [np.asarray(c, dtype=np.float64) for c in counts]
    n = arrays[0].shape[0]
    if n == 0 or any(a.shape[0] != n for a in arrays):
        sizes = [len(a) for a in arrays]
        raise ValueError(f"counts need the same number (> 0) of rows, got {sizes}")

    def resampled(index: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(*(a[index].sum(axis=-2) for a in arrays))

    result = bootstrap(
        (np.arange(n),),
        resampled,
        vectorized=True,
        n_resamples=settings.resamples,
        confidence_level=settings.confidence,
        method="percentile",
        rng=np.random.default_rng(settings.seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def headline_interval(
    task: Task,
    examples: Sequence[dict],
    labels: Sequence[str],
    pred: Sequence[Sequence[int]],
    settings: Bootstrap,
) -> tuple[float, float]:
    """Interval of the task's headline metric (a fraction, as `Task.evaluate` gives it)."""
    return interval(
        task.headline_from_counts, [task.outcome_counts(examples, labels, pred)], settings
    )


def drop_interval(
    task: Task,
    examples: Sequence[dict],
    labels: Sequence[str],
    reference: Sequence[Sequence[int]],
    candidate: Sequence[Sequence[int]],
    settings: Bootstrap,
) -> tuple[float, float]:
    """Paired interval of `Task.headline.drop` in points from `reference` to `candidate`
    (both models' predictions on the same `examples`, resampled together)."""

    def drop(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
        return 100.0 * task.headline.drop(
            task.headline_from_counts(ref), task.headline_from_counts(cand)
        )

    counts = [task.outcome_counts(examples, labels, p) for p in (reference, candidate)]
    return interval(drop, counts, settings)
