"""Exact de-duplication of examples, shared by ingest's sources and the feedback it joins."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable


def dedupe(
    examples: list[dict],
    key: Callable[[dict], Hashable],
    taken: Iterable[Hashable] = (),
) -> tuple[list[dict], int]:
    """Examples whose key is neither in `taken` (e.g. the held-out splits' texts) nor an
    earlier example's, in order (the first occurrence is kept), and how many were dropped."""
    seen = set(taken)
    kept = []
    for example in examples:
        k = key(example)
        if k not in seen:
            seen.add(k)
            kept.append(example)
    return kept, len(examples) - len(kept)
