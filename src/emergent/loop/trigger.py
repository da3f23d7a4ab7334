"""Whether an iteration retrains: drift flagged, enough new labelled examples, or forced.

"New" examples are the distinct feedback examples (by content hash) the champion was not
trained with. The champion's lineage names the feedback train file it saw
(`feedback_sha256`); when the export summary beside that file still has the same hash, its
`last_feedback_id` says exactly which stored rows it covered. Otherwise (the feedback was
exported again since, by a refused iteration) the champion's `feedback_examples` count is
subtracted from the distinct examples stored, which never counts one twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NONE = "none"  # the registry's value of a lineage tag without feedback


@dataclass(frozen=True)
class Trigger:
    """What the iteration found and whether it retrains (`reason` None: nothing to do)."""

    drift: bool | None  # None: not checked (no traffic, or too little)
    new_examples: int
    min_new_examples: int
    force: bool

    @property
    def reason(self) -> str | None:
        reasons = []
        if self.force:
            reasons.append("forced (loop.force=true)")
        if self.drift:
            reasons.append("drift flagged by the monitor")
        if self.new_examples >= self.min_new_examples:
            reasons.append(
                f"{self.new_examples} new labelled examples "
                f">= loop.min_new_examples={self.min_new_examples}"
            )
        return "; ".join(reasons) or None

    def describe(self) -> str:
        drift = "not checked" if self.drift is None else str(self.drift).lower()
        return (
            f"drift {drift}, {self.new_examples} new labelled examples "
            f"(loop.min_new_examples={self.min_new_examples})"
        )


def new_examples(
    rows: Iterable[tuple[int, str]],
    champion_tags: Mapping[str, str] | None,
    summary: Mapping[str, Any] | None,
) -> int:
    """How many distinct examples among the stored `(id, sha256)` rows the champion did not
    see. `champion_tags`: its registry tags (None: no champion); `summary`: the feedback
    export's summary.json (None: never exported)."""
    first_id: dict[str, int] = {}
    for row_id, sha in sorted(rows):
        first_id.setdefault(sha, row_id)
    seen_sha = (champion_tags or {}).get("feedback_sha256", NONE)
    if seen_sha == NONE:
        return len(first_id)
    if summary and summary.get("sha256", {}).get("train.jsonl") == seen_sha:
        last = int(summary["last_feedback_id"])
        return sum(1 for row_id in first_id.values() if row_id > last)
    seen = (champion_tags or {}).get("feedback_examples", NONE)
    return max(0, len(first_id) - (0 if seen == NONE else int(seen)))
