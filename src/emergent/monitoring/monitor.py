"""Compare a traffic window (features logged by the service) with the reference: the prepared
test split run through the same exported predictor and the same feature code."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from emergent.monitoring.drift import compare
from emergent.schema import MonitorConfig

log = logging.getLogger(__name__)


def row_text(row: dict[str, Any]) -> str:
    """A prepared example's text, whatever its format (`text`, or `tokens` joined)."""
    return str(row["text"]) if "text" in row else " ".join(row["tokens"])


def reference_features(export_dir: Path, rows: list[dict[str, Any]], batch: int = 64) -> list[dict]:
    from emergent.serving.features import features
    from emergent.serving.predictor import Predictor

    predictor = Predictor(export_dir)
    texts = [t for t in (row_text(r) for r in rows) if t.strip()]
    out: list[dict] = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        out.extend(features(predictor.tokenizer, chunk, predictor.predict(chunk)))
    return out


def load_window(path: Path) -> list[dict[str, Any]]:
    """Traffic rows; an absent window is no traffic, not an error."""
    if not Path(path).is_file():
        return []
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err.msg})") from err
    return rows


def monitor(
    window: list[dict[str, Any]],
    references: dict[str, Any],
    conf: MonitorConfig,
) -> dict[str, Any]:
    """`references`: task -> callable returning that task's reference features (lazy: a task
    without traffic never loads its model)."""
    tasks: dict[str, Any] = {}
    for task, reference in references.items():
        current = [r for r in window if r.get("task") == task]
        if len(current) < conf.min_rows:
            tasks[task] = {
                "status": "no traffic",
                "rows": len(current),
                "min_rows": conf.min_rows,
            }
            continue
        result = compare(reference(), current, conf.p_value, conf.drift_share)
        tasks[task] = {"status": "checked", **result}
        log.info(
            "%s: %d rows, drift=%s (%d features)",
            task,
            len(current),
            result["drift"],
            result["drifted_features"],
        )
    checked = [t for t in tasks.values() if t["status"] == "checked"]
    return {
        "status": "checked" if checked else "no traffic",
        "drift": any(t["drift"] for t in checked),
        "tasks": tasks,
    }
