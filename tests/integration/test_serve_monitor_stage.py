"""The `monitor` stage without traffic: reports "no traffic" and does not fail the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.stages import run_stage


def test_monitor_stage_without_traffic_reports_no_traffic(cfg: DictConfig, tmp_path: Path) -> None:
    root = tmp_path / "project"
    run_stage("monitor", cfg, Paths.for_dvc(root))
    metrics = json.loads((root / "metrics" / "monitor.json").read_text())
    assert metrics["status"] == "no traffic" and metrics["drift"] is False
    assert metrics["sentiment"] == {"rows": 0, "drift": None, "drift_share": None}
    assert "no traffic" in (root / "reports" / "monitor" / "index.html").read_text()
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["monitoring"])
    assert len(runs) == 1 and runs.iloc[0]["metrics.sentiment_rows"] == 0
