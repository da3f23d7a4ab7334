"""Contextual calibration (Zhao et al. 2021, "Calibrate before use").

The label distribution the model gives a content-free input ("N/A", "", "[MASK]") estimates its
bias towards some label words; dividing every prediction by it (W = diag(p_cf)^-1, b = 0) and
renormalising removes that bias without any labelled data.
"""

from __future__ import annotations

import torch


def content_free_prior(probs: torch.Tensor) -> torch.Tensor:
    """Mean label distribution over the content-free inputs (rows: inputs, columns: labels)."""
    prior = probs.mean(0)
    return prior / prior.sum()


def calibrate(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Divide out the prior and renormalise each row."""
    scaled = probs / prior.clamp_min(1e-12)
    return scaled / scaled.sum(-1, keepdim=True)
