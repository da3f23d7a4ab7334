"""Prompt-based few-shot and in-context learning with the MLM (the emergence lab).

templates (cloze patterns and encoding with demonstrations), verbalizers (label -> one vocab
token), calibration (contextual calibration), demonstrations (k-shot sampling), scoring (label
word probabilities at [MASK]), training (prompt and head fine-tuning), metrics, protocol (the
k x seed x method grid) and report (metrics file, plots, summary).
"""

from __future__ import annotations

from emergent.errors import UserError


class FewShotConfigError(UserError, ValueError):
    """Bad few-shot configuration: one line naming the config key."""
