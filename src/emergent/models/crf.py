"""A linear-chain CRF over word tags: learned start, transition and end scores trained with
the sequence log-likelihood (Lample et al. 2016; BERT-CRF taggers).

Token classification scores each word's tags on its own (cross-entropy per first sub-token).
A CRF adds a score for every pair of adjacent tags and trains the emissions and those scores
together on whole sentences, so the model learns which tag sequences are likely (an entity of
one type rarely follows another directly; `I-` runs have typical lengths) instead of leaving
that to decoding alone. Decoding is the constrained Viterbi of `emergent.tasks.decoding`
with the learned scores added: the IOB2 masks still forbid ill-formed spans.

Only the first sub-token of each word carries a label (`labels != -100`), so the chain runs
over words, the positions the scorer and the decoder see.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from emergent.tasks.decoding import SCORE_KEYS


class TagTransitions(nn.Module):
    """Start [C], transition [C, C] (from, to) and end [C] scores, zero at first (the model
    starts as the per-word classifier it was) or from a trained model's saved scores."""

    def __init__(self, num_tags: int, init: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        if init is not None:
            with torch.no_grad():
                for key in SCORE_KEYS:
                    getattr(self, key).copy_(torch.tensor(init[key], dtype=torch.float32))

    def as_dict(self) -> dict[str, list]:
        """The scores as plain lists (a model config entry and the export package carry them)."""
        return {key: getattr(self, key).detach().float().cpu().tolist() for key in SCORE_KEYS}

    def nll(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per labelled word, for emissions [B, T, C] and labels [B, T]
        (-100 where a position is no word's first sub-token)."""
        return crf_nll(logits, labels, self.start, self.transitions, self.end)


def crf_nll(
    logits: torch.Tensor,
    labels: torch.Tensor,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """Sum over rows of log Z - score(gold path), divided by the number of labelled words (so
    its scale, and the learning rate that suits it, match the per-word cross-entropy)."""
    keep = labels.ne(-100)
    words = keep.sum(1)
    rows = words > 0
    emissions, labels, keep, words = logits.float()[rows], labels[rows], keep[rows], words[rows]
    if len(words) == 0:
        return logits.sum() * 0.0
    n_rows, num_tags = len(words), emissions.shape[-1]
    width = int(words.max())
    # each row's labelled positions first, in order: the chain over words
    order = torch.argsort((~keep).int(), dim=1, stable=True)[:, :width]
    em = emissions.gather(1, order[..., None].expand(-1, -1, num_tags))
    tags = labels.gather(1, order).clamp(min=0)
    mask = torch.arange(width, device=em.device)[None] < words[:, None]
    row = torch.arange(n_rows, device=em.device)
    start, transitions, end = start.float(), transitions.float(), end.float()
    gold = start[tags[:, 0]] + em[row, 0, tags[:, 0]]
    alpha = start[None] + em[:, 0]  # log-sum of every path's score ending in each tag
    for t in range(1, width):
        step = transitions[tags[:, t - 1], tags[:, t]] + em[row, t, tags[:, t]]
        gold = gold + torch.where(mask[:, t], step, torch.zeros_like(step))
        nxt = torch.logsumexp(alpha[:, :, None] + transitions[None] + em[:, t, None, :], dim=1)
        alpha = torch.where(mask[:, t, None], nxt, alpha)
    gold = gold + end[tags[row, words - 1]]
    log_z = torch.logsumexp(alpha + end[None], dim=1)
    return (log_z - gold).sum() / words.sum()
