"""MLflow tracking: one run per stage execution, with config, lineage tags and outputs.

Backend: `sqlite:///mlflow.db` at the project root unless `MLFLOW_TRACKING_URI` is set (MLflow 3
refuses the plain file store); artifacts go to `mlartifacts/<experiment>/`.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emergent.config import project_root

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000


def is_rank_zero() -> bool:
    """True in the launching process; Lightning's DDP children get LOCAL_RANK/NODE_RANK > 0."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def tracking_uri(cfg: DictConfig, root: Path | None = None) -> str:
    """The tracking URI, with a relative sqlite path anchored at the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or str(cfg.mlflow.tracking_uri)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str((root or project_root()) / uri[len(prefix) :])
    return uri


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def git_info(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=20
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


class Tracker:
    """Handle on the active stage run; a no-op when tracking is disabled."""

    def __init__(self, run_id: str | None = None, experiment: str = "") -> None:
        self.run_id = run_id
        self.experiment = experiment

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        import mlflow

        numeric = {
            k: float(v) for k, v in flatten(metrics).items() if _is_number(v) and k != "step"
        }
        if numeric:
            mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if not self.enabled or not Path(path).exists():
            return
        import mlflow

        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.enabled:
            import mlflow

            items = list(flatten(params).items())
            for start in range(0, len(items), 100):
                mlflow.log_params(dict(items[start : start + 100]))


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def ensure_experiment(name: str, artifact_root: Path) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=(artifact_root / name).as_uri())


@contextmanager
def stage_run(
    cfg: DictConfig,
    stage: str,
    experiment_key: str,
    data_sha256: str = "",
    extra_tags: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open one MLflow run for a stage execution and log config, params and lineage tags.

    The run ends FAILED if the stage raises, so broken runs are visible in the UI.
    """
    if not cfg.mlflow.get("enabled", True) or not is_rank_zero():
        yield Tracker()
        return
    import mlflow

    root = project_root()
    mlflow.set_tracking_uri(tracking_uri(cfg, root))
    # Per-task experiments are named after the task unless `mlflow.experiments` maps them.
    experiment = str(cfg.mlflow.experiments.get(experiment_key, experiment_key))
    artifact_root = root / str(cfg.mlflow.artifact_dir)
    mlflow.set_experiment(experiment_id=ensure_experiment(experiment, artifact_root))
    tags = {
        **git_info(root),
        "dvc_stage": stage,
        "data_sha256": data_sha256 or "unknown",
        **(extra_tags or {}),
    }
    with mlflow.start_run(run_name=stage, tags={k: str(v) for k, v in tags.items()}) as run:
        tracker = Tracker(run.info.run_id, experiment)
        container = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(container, dict)
        tracker.log_params(container)
        mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
        log.info("MLflow run %s in experiment %r", run.info.run_id, experiment)
        yield tracker
