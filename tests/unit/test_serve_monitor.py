"""Drift tests on known distributions, and the no-traffic path of the monitor."""

from __future__ import annotations

import numpy as np

from emergent.monitoring.drift import compare, psi, report_html
from emergent.monitoring.monitor import monitor
from emergent.schema import MonitorConfig

CONF = MonitorConfig(
    window="data/monitor/window.jsonl",
    export_since_hours=24,
    min_rows=30,
    p_value=0.05,
    drift_share=0.5,
    fail_on_drift=False,
    reference_max_rows=500,
)


def rows(rng: np.random.Generator, n: int, shift: float, labels: list[str]) -> list[dict]:
    return [
        {
            "task": "sentiment",
            "n_chars": float(rng.normal(100 + 60 * shift, 20)),
            "n_tokens": float(rng.normal(25 + 15 * shift, 5)),
            "unk_share": float(rng.beta(1, 50 - 40 * shift)),
            "confidence": float(rng.uniform(0.5 + 0.1 * shift, 1.0)),
            "label": str(rng.choice(labels)),
        }
        for _ in range(n)
    ]


def test_same_distribution_does_not_drift_a_shifted_one_does() -> None:
    rng = np.random.default_rng(0)
    reference = rows(rng, 400, 0.0, ["fresh", "rotten"])
    same = compare(reference, rows(rng, 200, 0.0, ["fresh", "rotten"]), 0.05, 0.5)
    assert not same["drift"] and same["drifted_features"] <= 1
    shifted = compare(reference, rows(rng, 200, 1.0, ["rotten"]), 0.05, 0.5)
    assert shifted["drift"] and shifted["features"]["label"]["drift"]
    assert shifted["features"]["n_tokens"]["psi"] > 0.25 > same["features"]["n_tokens"]["psi"]
    assert "DRIFT" in report_html({"tasks": {"sentiment": {"status": "checked", **shifted}}})


def test_psi_is_zero_for_identical_samples() -> None:
    x = np.arange(100.0)
    assert psi(x, x) == 0.0


def test_no_traffic_is_reported_without_loading_a_model() -> None:
    def never() -> list[dict]:
        raise AssertionError("reference built for a task without traffic")

    result = monitor([], {"sentiment": never, "ner": never}, CONF)
    assert result["status"] == "no traffic" and result["drift"] is False
    assert result["tasks"]["ner"] == {"status": "no traffic", "rows": 0, "min_rows": 30}
    assert "no traffic" in report_html(result)
