"""Decoding word tag probabilities into IOB2 tags: per-word argmax or constrained Viterbi.

Argmax decodes each word on its own and can emit ill-formed spans: an `I-X` that does not
continue an entity of type X (after `O`, after `B-Y`/`I-Y`, or at the start of a sentence).
Scorers then count such spans by a convention (strict IOB2 drops them, conlleval starts an
entity there) instead of the model choosing a well-formed reading. Constrained Viterbi picks
the sequence of tags with the highest total log-probability among the well-formed ones.

A model trained with a CRF layer (`emergent.models.crf`) also learned a score for every start
tag, pair of adjacent tags and end tag; Viterbi adds them (`TagScores`) to the log-probabilities
and the masks. The scores travel in the model's config (`CONFIG_KEY`) and in the export
package's task definition, so every decoder below uses the same ones.

Numpy only, and the one implementation: evaluation (through the task's `assemble`), the
export parity gate and the torch-free server (the task's `respond`) all call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DECODINGS = ("argmax", "viterbi")
#: model config entry holding learned transition scores ({key: list} for SCORE_KEYS)
CONFIG_KEY = "crf_scores"
SCORE_KEYS = ("start", "transitions", "end")
#: learned scores as plain lists: start [C], transitions [C, C] (from, to), end [C]
TagScores = Mapping[str, Any]
# Log-probability floor: a probability of exactly 0 stays a finite, very bad score, so a
# sentence whose every well-formed path passes through it still decodes.
_FLOOR = 1e-12


def allowed_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(start [C], transition [C, C]) masks of IOB2: `I-X` only after `B-X` or `I-X`, never
    first. Every other tag may start a sentence and follow any tag."""
    labels = list(labels)
    inside = [lab.startswith("I-") for lab in labels]
    start = np.array([not i for i in inside], dtype=bool)
    trans = np.ones((len(labels), len(labels)), dtype=bool)
    for j, lab in enumerate(labels):
        if inside[j]:
            kind = lab[2:]
            trans[:, j] = [p in (f"B-{kind}", f"I-{kind}") for p in labels]
    return start, trans


def viterbi(
    log_probs: np.ndarray,
    start: np.ndarray,
    trans: np.ndarray,
    learned: TagScores | None = None,
) -> np.ndarray:
    """The best tag sequence ([T] ids) under the allowed `start` [C] and `trans` [C, C]
    masks, for per-position log-probabilities [T, C], plus `learned` start / transition / end
    scores where the model has them; ties go to the lower tag id."""
    scores = np.asarray(log_probs, dtype=np.float64)
    length = scores.shape[0]
    if length == 0:
        return np.zeros(0, dtype=np.int64)
    penalty = np.where(trans, 0.0, -np.inf)
    first = np.where(start, 0.0, -np.inf)
    last = np.zeros(scores.shape[1])
    if learned is not None:
        penalty = penalty + np.asarray(learned["transitions"], dtype=np.float64)
        first = first + np.asarray(learned["start"], dtype=np.float64)
        last = last + np.asarray(learned["end"], dtype=np.float64)
    best = scores[0] + first
    back = np.zeros(scores.shape, dtype=np.int64)
    for t in range(1, length):
        cand = best[:, None] + penalty  # [prev, cur]
        back[t] = cand.argmax(0)
        best = cand.max(0) + scores[t]
    best = best + last
    path = np.empty(length, dtype=np.int64)
    path[-1] = int(best.argmax())
    for t in range(length - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def decode(
    probs: np.ndarray, labels: Sequence[str], method: str, learned: TagScores | None = None
) -> np.ndarray:
    """Tag ids ([T]) of one sentence from its word tag probabilities ([T, C]); `learned`
    transition scores (a CRF-trained model's) join Viterbi."""
    probs = np.asarray(probs, dtype=np.float64)
    if method == "argmax" or probs.shape[0] == 0:
        return probs.argmax(-1).astype(np.int64) if probs.size else np.zeros(0, np.int64)
    if method != "viterbi":
        raise ValueError(f"decoding must be one of {DECODINGS}, got {method!r}")
    start, trans = allowed_transitions(labels)
    # Softmax probabilities of a CRF's emissions: their log differs from the emissions by one
    # constant per word, which moves every path's score alike, so the best path is the same.
    return viterbi(np.log(np.maximum(probs, _FLOOR)), start, trans, learned)
