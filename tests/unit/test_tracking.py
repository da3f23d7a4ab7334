"""Tracking: one MLflow run per stage execution with config, params and lineage tags."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from emergent.tracking import flatten, stage_run, tracking_uri
from tests.conftest import ROOT


def test_flatten_nested_config() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {
        "a.b": "1",
        "a.c.d": "x",
        "e": "[1, 2]",
    }


def test_relative_sqlite_uri_is_anchored_at_root(cfg, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cfg.mlflow.tracking_uri = "sqlite:///mlflow.db"
    assert tracking_uri(cfg, ROOT) == f"sqlite:///{ROOT / 'mlflow.db'}"


def test_stage_run_logs_params_tags_and_config(cfg, tmp_path: Path) -> None:
    with stage_run(cfg, "ingest", "data", data_sha256="abc") as tracker:
        tracker.log_metrics({"rows": {"train": 10}, "note": "text is skipped"})
        run_id = tracker.run_id
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dvc_stage"] == "ingest" and run.data.tags["data_sha256"] == "abc"
    assert run.data.tags["git_commit"] and run.data.tags["git_dirty"] in {"true", "false"}
    assert run.data.params["model.name"] == "tiny_bert"
    assert run.data.metrics == {"rows.train": 10.0}
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.name == "data"
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id)]
    assert "config.yaml" in artifacts


def test_failed_stage_marks_the_run_failed(cfg) -> None:
    with pytest.raises(RuntimeError), stage_run(cfg, "validate", "data") as tracker:
        run_id = tracker.run_id
        raise RuntimeError("boom")
    assert mlflow.get_run(run_id).info.status == "FAILED"
