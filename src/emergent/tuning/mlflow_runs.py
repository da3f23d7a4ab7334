"""The study's MLflow runs: one parent run per study, each trial's fine-tuning run nested in it.

The parent is created with the client (not the fluent API), so each trial's run can still be
opened by the finetune stage's own `stage_run` as a top-level fluent run; the
`mlflow.parentRunId` tag is what nests it in the UI and in `search_runs`. Workers on several
machines find the parent through the Optuna study (`PARENT_ATTR`), so there is one per study.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emergent.config import project_root
from emergent.schema import Settings
from emergent.tasks import Task
from emergent.tracking import ensure_experiment, flatten, git_info, is_rank_zero, tracking_uri


def enabled(settings: Settings) -> bool:
    return settings.mlflow.enabled and is_rank_zero()


def _client(settings: Settings) -> Any:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(settings))
    return mlflow.MlflowClient()


def open_parent(cfg: DictConfig, settings: Settings, task: Task, study: str, storage: str) -> str:
    """Create the study's parent run in the task's experiment; '' when tracking is off. Its
    params are `tune` as composed (`cfg`: the keys conf/ sets, as a stage run logs them)."""
    if not enabled(settings):
        return ""
    from mlflow.entities import Param

    client = _client(settings)
    root = project_root()
    conf = settings.mlflow
    experiment = conf.experiments.get(task.name, task.name)
    kind = conf.experiment_kind or ""
    experiment_id = ensure_experiment(experiment, root / conf.artifact_dir, kind)
    tags = {
        **git_info(root),
        "dvc_stage": "tune",
        "task": task.name,
        "optuna_study": study,
        "optuna_storage": storage,
    }
    run = client.create_run(experiment_id, run_name=f"tune {task.name} · {study}", tags=tags)
    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    assert isinstance(tune, dict)
    params = [
        Param(k, v)
        for k, v in flatten({"tune": tune, "model": {"name": settings.model.name}}).items()
    ]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    return str(run.info.run_id)


def finish_trial(settings: Settings, result: Any, task: str) -> None:
    """Name the trial's run, record its parameters and state; a pruned trial's run ends KILLED
    (Lightning and the stage's run both end it FAILED when the pruning exception passes)."""
    if not enabled(settings) or not result.run_id:
        return
    from mlflow.entities import Param, RunTag

    client = _client(settings)
    client.update_run(result.run_id, name=f"tune {task} · trial {result.number}")
    client.log_batch(
        result.run_id,
        params=[Param(f"trial.{k}", str(v)) for k, v in result.params.items()],
        tags=[RunTag("optuna_state", result.state), RunTag("optuna_trial", str(result.number))],
    )
    if result.state == "PRUNED":
        client.set_terminated(result.run_id, status="KILLED")


def update_parent(settings: Settings, run_id: str, summary: Mapping[str, Any]) -> None:
    """The study's figures so far on its parent run; the run ends when no trial is left."""
    if not enabled(settings):
        return
    from mlflow.entities import Metric, RunTag

    client = _client(settings)
    now = int(time.time() * 1000)
    counts = summary["counts"]
    metrics = {
        "trials_complete": counts["complete"],
        "trials_pruned": counts["pruned"],
        "trials_failed": counts["fail"],
        "search_wall_seconds": summary["wall_seconds"],
    }
    tags = {}
    best = summary["best"]
    if best is not None:
        metrics[f"best_{summary['metric']}"] = best["value"]
        tags = {"best_trial": best["number"], "best_run_id": best["mlflow_run_id"] or ""}
        tags.update({f"best.{k}": v for k, v in best["params"].items()})
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    if summary.get("preset"):
        client.log_artifact(run_id, summary["preset"])
    if counts["waiting"] == 0 and counts["running"] == 0:
        client.set_terminated(run_id, status="FINISHED")
