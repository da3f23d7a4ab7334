"""True few-shot sampling: k examples per class for training, as many for dev, nested in k.

For one seed the per-class order is fixed, so the k=4 set is contained in the k=16 set and the
curves over k differ only by the added data. Demonstrations for in-context prompts are drawn
from the k-shot training set, one per class per query by default, in random order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any


def by_label(examples: Sequence[dict], labels: Sequence[str]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {label: [] for label in labels}
    for example in examples:
        groups[str(example["label"])].append(example)
    return groups


def sample_per_class(
    examples: Sequence[dict], labels: Sequence[str], k: int, seed: int
) -> list[dict]:
    """k examples of every label (fewer if the data has fewer), shuffled, nested across k."""
    picked = []
    for label, group in by_label(examples, labels).items():
        order = list(group)
        random.Random(f"{seed}:{label}").shuffle(order)
        picked += order[:k]
    random.Random(seed).shuffle(picked)
    return picked


def fixed_subset(examples: Sequence[dict], size: int | None, seed: int) -> list[dict]:
    """One fixed random subset (the same for every method, k and seed)."""
    rows = list(examples)
    random.Random(seed).shuffle(rows)
    return rows if not size else rows[: int(size)]


def demonstrations_for(
    pool: Sequence[dict],
    labels: Sequence[str],
    per_class: int,
    rng: random.Random,
    query: Mapping[str, Any] | None = None,
) -> list[dict]:
    """`per_class` demonstrations of each label from `pool`, in random order, never `query`
    itself: a training prompt that shows its own text with its gold label teaches copying
    (LM-BFF leaves the query out of its own demonstrations too)."""
    chosen = []
    for group in by_label([e for e in pool if e is not query], labels).values():
        chosen += rng.sample(group, min(per_class, len(group)))
    rng.shuffle(chosen)
    return chosen
