"""Overlapping windows over long inputs, and which window 'owns' each word.

A sentence longer than the model window is tokenized into overlapping windows (the
tokenizer's `stride`). Every word is predicted in exactly one window: the one where its first
sub-token sits farthest from a window edge, so it sees the most context on both sides. The
same rule serves training labels, evaluation, export parity and serving, so every word of a
long input is predicted and every gold entity is scored.
"""

from __future__ import annotations

from collections.abc import Sequence


def owned_positions(windows: Sequence[Sequence[int | None]]) -> list[list[tuple[int, int]]]:
    """For each window of ONE input (its `word_ids`, special tokens as None): the
    (position, word) pairs of first sub-tokens whose word this window owns, in position order.
    """
    best: dict[int, tuple[int, int, int]] = {}  # word -> (margin, window, position)
    for w, word_ids in enumerate(windows):
        content = [p for p, word in enumerate(word_ids) if word is not None]
        if not content:
            continue
        first, last = content[0], content[-1]
        previous = None
        for pos, word in enumerate(word_ids):
            if word is None or word == previous:
                previous = word
                continue
            previous = word
            # A window that starts mid-word sees a continuation piece at margin 0: it never
            # beats the window holding the true first sub-token (ties keep the earlier one).
            margin = min(pos - first, last - pos)
            if word not in best or margin > best[word][0]:
                best[word] = (margin, w, pos)
    owned: list[list[tuple[int, int]]] = [[] for _ in windows]
    for word, (_, w, pos) in best.items():
        owned[w].append((pos, word))
    for pairs in owned:
        pairs.sort()
    return owned


def clamp_stride(stride: int, max_length: int, special_tokens: int = 2) -> int:
    """A stride the tokenizer accepts: strictly less than the content length of a window."""
    return max(0, min(int(stride), (max_length - special_tokens) // 2))
