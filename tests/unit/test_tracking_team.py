"""Tracking at team scale, the fast parts: where queued experiments' runs go, and the sqlite
file prepared for parallel stage processes (the slow, multi-process checks are in
tests/integration/test_team.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow
import pytest

from emergent.tracking import ensure_experiment, prepare_sqlite, tracking_uri


def test_queued_experiments_log_into_the_parent_repositorys_store(
    cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc exp run --queue` runs in a temporary workspace and points DVC_ROOT at the parent
    repository: the relative sqlite default must resolve there, not in the deleted workspace."""
    workspace = tmp_path / "parent" / ".dvc" / "tmp" / "exps" / "tmpabc"
    (workspace / "conf").mkdir(parents=True)
    (workspace / "conf" / "config.yaml").write_text("{}\n", encoding="utf-8")
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("EMERGENT_ROOT", raising=False)
    cfg.mlflow.tracking_uri = "sqlite:///mlflow.db"
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri(cfg) == f"sqlite:///{workspace / 'mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "parent"))
    assert tracking_uri(cfg) == f"sqlite:///{tmp_path / 'parent' / 'mlflow.db'}"


def test_prepare_sqlite_creates_the_schema_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "new" / "mlflow.db"
    prepare_sqlite(f"sqlite:///{db}")
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert {"experiments", "runs", "metrics", "registered_models", "alembic_version"} <= tables
    prepare_sqlite(f"sqlite:///{db}")  # again: a no-op on a prepared file
    prepare_sqlite("http://127.0.0.1:1")  # not sqlite: nothing to do, nothing contacted


def test_ensure_experiment_takes_the_one_another_process_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two queued experiments start at once: both see no experiment, one creates it, the
    other's create fails and must fall back to the existing one."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    existing = mlflow.create_experiment("data")
    monkeypatch.setattr(mlflow, "get_experiment_by_name", _none_once(mlflow.get_experiment_by_name))
    assert ensure_experiment("data", tmp_path) == existing


def _none_once(real):
    """`get_experiment_by_name` that misses once: the lookup that raced the other process."""
    calls = []

    def lookup(name: str):
        calls.append(name)
        return None if len(calls) == 1 else real(name)

    return lookup
