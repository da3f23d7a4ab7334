"""MLflow tracking: one run per stage execution, with config, lineage tags and outputs.

Backend: `sqlite:///mlflow.db` at the project root unless `MLFLOW_TRACKING_URI` is set (MLflow 3
refuses the plain file store); artifacts go to `mlartifacts/<experiment>/`, or to the tracking
server's own artifact store (`make server`) when the URI is http(s). The sqlite file is made safe
for parallel stage processes (`prepare_sqlite`: WAL, schema created under a lock).

What the UI shows is what users compare, so: experiments carry `mlflow.experimentKind` (the UI
otherwise opens them as GenAI experiments, on the traces tab), runs are named by what they are
(stage, task, model, and the DVC experiment or the Hydra overrides that made them), prepared
splits are logged as dataset inputs (the Dataset column), and evaluation can add its test
figures to the run that trained the model, so one row holds config, validation and test.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emergent.config import plain_dict, project_root
from emergent.schema import MlflowConfig, Settings, validate_section

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000
MAX_RUN_NAME_CHARS = 250  # MLflow's run name column
DIGEST_CHARS = 12  # shown in the Dataset column (MLflow allows 36); the full sha256 is a tag
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def is_rank_zero() -> bool:
    """True in the launching process; Lightning's DDP children get LOCAL_RANK/NODE_RANK > 0,
    and torchrun's processes on other machines RANK > 0 (torchrun sets no NODE_RANK)."""
    return all(os.environ.get(key, "0") == "0" for key in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def store_root() -> Path:
    """Where relative tracking paths (the sqlite file, `mlartifacts/`) live: the DVC repository
    (`DVC_ROOT`, which `dvc exp run --queue` points at the parent repository, not the temporary
    workspace it runs in and deletes afterwards), else the project root."""
    dvc_root = os.environ.get("DVC_ROOT")
    return Path(dvc_root).resolve() if dvc_root else project_root()


Tracked = Settings | MlflowConfig | DictConfig


def mlflow_section(config: Tracked) -> MlflowConfig:
    """The typed `mlflow` section: the validated settings' own, or, for a caller that holds
    only the composed config (the training layer, `stage_times`), that section checked alone."""
    if isinstance(config, MlflowConfig):
        return config
    if isinstance(config, Settings):
        return config.mlflow
    return validate_section(
        MlflowConfig, plain_dict(config.mlflow, "mlflow", resolve=True), "mlflow"
    )


def tracking_uri(config: Tracked, root: Path | None = None) -> str:
    """The tracking URI, with a relative sqlite path anchored at `store_root()`."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow_section(config).tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str((root or store_root()) / uri[len(prefix) :])
    return uri


def prepare_sqlite(uri: str, lock_timeout_s: float = 300.0) -> None:
    """Make a sqlite store safe for concurrent stage processes (`dvc queue start -j 2`).

    MLflow 3.17 creates a fresh database's schema without a lock: processes opening a new
    file at once race through the migrations and all but one die ("duplicate column name",
    "database is locked"). Here the first process creates the schema under an exclusive file
    lock while the others wait, and the file is switched to WAL (persistent in the file):
    readers no longer block the writer and commits are shorter, so writers rarely reach
    MLflow's 20 s busy timeout. No-op for other URIs (a server serialises its own writes).
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    import fcntl
    import sqlite3

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = Path(uri[len(prefix) :])
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + lock_timeout_s
    with open(lock, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{lock}: locked for {lock_timeout_s:.0f} s") from None
                time.sleep(0.1)
        try:
            with sqlite3.connect(path, timeout=60) as connection:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
            # Creates (or checks) the schema; the engine is cached for the run's own store.
            SqlAlchemyStore(uri, str(path.parent / "mlartifacts"))
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def ensure_experiment(name: str, artifact_root: Path, kind: str = "") -> str:
    """The experiment's id, created on first use; `kind` becomes its `mlflow.experimentKind`
    tag (set on experiments made before the tag existed too, never overwriting a user's)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        tags = {EXPERIMENT_KIND_TAG: kind} if kind else None
        # A tracking server stores artifacts itself (proxied, `mlflow-artifacts:/`), so that
        # every client sees them; a local store keeps them under `artifact_root`.
        remote = mlflow.get_tracking_uri().startswith(("http://", "https://"))
        location = None if remote else (artifact_root / name).as_uri()
        try:
            return mlflow.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException:
            # Another process (a parallel queued experiment) created it between the two calls.
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    if kind and EXPERIMENT_KIND_TAG not in experiment.tags:
        mlflow.MlflowClient().set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, kind
        )
    return experiment.experiment_id


def hydra_overrides() -> list[str]:
    """The command-line overrides of a Hydra CLI run (`python -m emergent <stage> k=v`), if any.

    A process that never loaded Hydra's config holder (every DVC stage: `python -m
    emergent.stages` reads params.yaml) has no Hydra run to ask about, so Hydra is not imported
    just to be told so (about 0.1 s of each stage's start-up)."""
    if "hydra.core.hydra_config" not in sys.modules:
        return []
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task if not str(o).startswith("task=")]


def run_origin() -> dict[str, str]:
    """What launched this run: the DVC experiment (`DVC_EXP_NAME`, set by `dvc exp run`) or the
    Hydra overrides of a CLI run; empty for a plain `dvc repro`."""
    origin = {}
    if os.environ.get("DVC_EXP_NAME"):
        origin["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    overrides = hydra_overrides()
    if overrides:
        origin["hydra_overrides"] = " ".join(overrides)
    return origin


def run_name(stage: str, task: str | None, model: str | None, origin: Mapping[str, str]) -> str:
    """`finetune ner · tiny_bert · exp-1a2b3`: what the run is, readable in the runs table."""
    head = " ".join(p for p in (stage, task) if p)
    parts = [head, model, origin.get("dvc_exp_name") or origin.get("hydra_overrides")]
    name = " · ".join(p for p in parts if p)
    return name if len(name) <= MAX_RUN_NAME_CHARS else name[: MAX_RUN_NAME_CHARS - 1] + "…"


def split_inputs(prepared: Path, task: str, splits: Iterable[str]) -> list[Any]:
    """MLflow dataset inputs for prepared splits: name `<task>/<split>`, context the split,
    digest from `manifest.json`'s sha256 of the file (so equal data shows an equal digest)."""
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    # mlflow makes its artifact source classes at import time (`type(...)`), so no stub has it.
    from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from emergent.io import read_jsonl

    manifest = prepared / "manifest.json"
    files = (
        json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
        if manifest.is_file()
        else {}
    )
    inputs = []
    for split in splits:
        rel = f"{task}/{split}.jsonl"
        path = (prepared / rel).resolve()
        sha = str(files.get(rel, ""))
        dataset = from_pandas(
            pd.DataFrame(read_jsonl(path)),
            source=LocalArtifactDatasetSource(str(path)),
            name=f"{task}/{split}",
            digest=sha[:DIGEST_CHARS] or None,
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, split), InputTag("sha256", sha or "unknown")]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
    return inputs


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

        numeric = numeric_metrics(metrics)
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

            # A null means "not set" (no path, no cap, the default): logging the "None"
            # params would bury the ones that matter.
            items = [(k, v) for k, v in flatten(params).items() if v != "None"]
            for start in range(0, len(items), 100):
                mlflow.log_params(dict(items[start : start + 100]))

    def log_datasets(self, prepared: Path, task: str, splits: Iterable[str]) -> None:
        """Log prepared splits as this run's dataset inputs (see `split_inputs`)."""
        if self.run_id is not None:
            import mlflow

            mlflow.MlflowClient().log_inputs(self.run_id, split_inputs(prepared, task, splits))

    def log_to_run(
        self,
        run_id: str | None,
        metrics: Mapping[str, Any],
        tags: Mapping[str, Any] | None = None,
        splits: tuple[Path, str, Iterable[str]] | None = None,
    ) -> bool:
        """Add metrics, tags and dataset inputs (`splits`: prepared folder, task, split names)
        to ANOTHER run of this tracking store: the run that trained the model being evaluated.
        False, with a warning, when that run is not in this store (a model trained against
        another MLFLOW_TRACKING_URI)."""
        if not self.enabled or not run_id:
            return False
        import mlflow
        from mlflow.entities import Metric, RunTag
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient()
        try:
            client.get_run(run_id)
        except MlflowException:
            log.warning("run %s is not in this tracking store; not adding test metrics", run_id)
            return False
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in numeric_metrics(metrics).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )
        if splits is not None:
            client.log_inputs(run_id, split_inputs(*splits))
        return True


def metric_key(key: str) -> str:
    """`key` with the characters MLflow refuses in metric names (anything but letters, digits,
    `_ - . : /` and space) replaced by `_`: a few-shot snapshot is named `minilm@step-45`,
    and MLflow would reject the whole batch (after hours of work) over the `@`."""
    return re.sub(r"[^\w\-.:/ ]", "_", key)


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flattened numeric entries (nested dicts become `a.b`, keys made valid for MLflow);
    text and `step` are skipped."""
    return {
        metric_key(k): float(v)
        for k, v in flatten(metrics).items()
        if _is_number(v) and k != "step"
    }


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def startup_seconds() -> float:
    """Seconds since this process was created: its imports, config composition and
    validation before the stage's MLflow run opens (`emergent.stage_times` reports it)."""
    import psutil

    return round(time.time() - psutil.Process().create_time(), 2)


@contextmanager
def stage_run(
    cfg: DictConfig,
    stage: str,
    experiment_key: str,
    data_sha256: str = "",
    extra_tags: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> Iterator[Tracker]:
    """Open one MLflow run for a stage execution and log config, params and lineage tags.

    The run ends FAILED if the stage raises, so broken runs are visible in the UI. `cfg`, the
    composed config, is what the run logs (params and `config.yaml`: the keys conf/ sets, as
    it sets them); the run itself is configured from `settings` (a stage not migrated yet
    leaves it out, and the `mlflow` section is checked here).
    """
    mlflow_cfg = mlflow_section(settings if settings is not None else cfg)
    if not mlflow_cfg.enabled or not is_rank_zero():
        yield Tracker()
        return
    import mlflow

    root = project_root()
    uri = tracking_uri(mlflow_cfg)
    prepare_sqlite(uri)
    mlflow.set_tracking_uri(uri)
    # Per-task experiments are named after the task unless `mlflow.experiments` maps them.
    experiment = mlflow_cfg.experiments.get(experiment_key, experiment_key)
    artifact_root = store_root() / mlflow_cfg.artifact_dir
    kind = mlflow_cfg.experiment_kind or ""
    mlflow.set_experiment(experiment_id=ensure_experiment(experiment, artifact_root, kind))
    origin = run_origin()
    task = (extra_tags or {}).get("task")
    # Data stages do not depend on the model; naming one there would mislead.
    model_name = settings.model.name if settings is not None else str(cfg.model.name)
    model = None if experiment_key == "data" else model_name
    tags = {
        **git_info(root),
        "dvc_stage": stage,
        "data_sha256": data_sha256 or "unknown",
        **origin,
        **(extra_tags or {}),
    }
    name = run_name(stage, str(task) if task else None, model, origin)
    # A stage run inside another (each seed's finetune under the `seeds` run) is nested in it.
    nested = mlflow.active_run() is not None
    with mlflow.start_run(
        run_name=name, tags={k: str(v) for k, v in tags.items()}, nested=nested
    ) as run:
        tracker = Tracker(run.info.run_id, experiment)
        if not nested:  # a stage's own process: what its imports and config cost (make times)
            tracker.log_metrics({"startup_s": startup_seconds()})
        container = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(container, dict)
        tracker.log_params({str(k): v for k, v in container.items()})
        mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
        log.info("MLflow run %r (%s) in experiment %r", name, run.info.run_id, experiment)
        yield tracker
