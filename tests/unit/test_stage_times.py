"""The per-stage time table (`make times`) read back from a real MLflow sqlite store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient

from emergent.stage_times import stage_times, table

T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def _run(
    client: MlflowClient,
    experiment: str,
    tags: dict[str, str],
    start_s: float,
    run_s: float,
    startup_s: float | None = None,
) -> str:
    start = int((T0.timestamp() + start_s) * 1000)
    run = client.create_run(experiment, start_time=start, tags=tags)
    if startup_s is not None:
        client.log_metric(run.info.run_id, "startup_s", startup_s)
    client.set_terminated(run.info.run_id, end_time=start + int(run_s * 1000))
    return run.info.run_id


def test_latest_run_per_stage_and_task_with_its_start_up(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    data = client.create_experiment("data")
    ner = client.create_experiment("ner")
    _run(client, data, {"dvc_stage": "ingest"}, 0, 5.0, startup_s=2.0)  # superseded below
    _run(client, data, {"dvc_stage": "ingest"}, 100, 4.0, startup_s=1.5)
    parent = _run(client, ner, {"dvc_stage": "finetune", "task": "ner"}, 200, 60.0, 8.0)
    _run(client, ner, {"dvc_stage": "finetune", "mlflow.parentRunId": parent}, 210, 9.0)
    _run(client, ner, {"note": "not a stage"}, 300, 1.0)
    _run(client, ner, {"dvc_stage": "evaluate", "task": "ner"}, 400, 3.0)  # before startup_s

    rows = stage_times(uri)
    assert [(r.name, r.startup_s, r.run_s) for r in rows] == [
        ("ingest", 1.5, 4.0),
        ("finetune@ner", 8.0, 60.0),
        ("evaluate@ner", None, 3.0),
    ]
    assert [r.total_s for r in rows] == [5.5, 68.0, 3.0]

    since = stage_times(uri, since=datetime(2026, 12, 6, 4, 1, 30, tzinfo=UTC))
    assert [r.name for r in since] == ["ingest", "finetune@ner", "evaluate@ner"]
    everything = stage_times(uri, since=T0)
    assert [r.name for r in everything] == ["ingest", "ingest", "finetune@ner", "evaluate@ner"]

    lines = table(rows).splitlines()
    assert lines[2].split()[-4:] == ["8.0", "60.0", "68.0", "88.9%"]
    assert lines[3].split()[-4:] == ["-", "3.0", "3.0", "3.9%"]
    assert lines[-1].split()[1:5] == ["9.5", "67.0", "76.5", "(3"]
