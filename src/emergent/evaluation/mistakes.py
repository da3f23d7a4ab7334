"""Error reports: the worst mistakes on the test set, for reading rather than counting.

What a mistake is, what its report row shows and how bad it is belong to the task
(`Task.mistake`); this module, which only the evaluate stage imports, collects and orders them,
so changing how mistakes are ranked re-runs evaluation only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emergent.tasks.base import Task


def worst(
    task: Task,
    examples: Sequence[dict],
    labels: Sequence[str],
    pred: Sequence[Sequence[int]],
    conf: Sequence[Any],
    limit: int,
) -> list[dict[str, Any]]:
    """The `limit` worst mistakes, worst first (the task's rank; ties keep the test order)."""
    ranked = []
    for index, (example, p, c) in enumerate(zip(examples, pred, conf, strict=True)):
        mistake = task.mistake(index, example, labels, p, c)
        if mistake is not None:
            ranked.append(mistake)
    ranked.sort(key=lambda m: m[0])
    return [row for _, row in ranked[:limit]]
