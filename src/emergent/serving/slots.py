"""Which model answers for a task: an export dir on disk or a registry alias, loaded into a
slot whose reference is swapped atomically on reload (the old model finishes its batch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emergent.serving.package import MODEL_FILE
from emergent.serving.predictor import Predictor

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model package is missing or broken: one line naming the task and the path."""


@dataclass(frozen=True)
class Source:
    task: str
    export_dir: Path
    name: str
    version: str
    alias: str | None = None


@dataclass
class Loaded:
    predictor: Predictor
    source: Source
    kind: str  # "entities" or "classes": decided from the output shape at warm-up

    def info(self) -> dict[str, Any]:
        return {
            "task": self.source.task,
            "model": self.source.name,
            "version": self.source.version,
            "alias": self.source.alias,
            "kind": self.kind,
            "labels": list(self.predictor.labels),
            "max_length": int(self.predictor.max_length),
        }


def registered_name(task: str) -> str:
    """The MLflow registered-model name of a task's exports (`emergent.registry` writes it,
    serving resolves its aliases; serving sits below the registry, so the name lives here)."""
    return f"emergent-{task}"


def package_version(export_dir: Path) -> str:
    """A version for an export dir outside the registry: the int8 model's content hash."""
    model = export_dir / MODEL_FILE
    digest = hashlib.sha256()
    with model.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:12]}"


def resolve_local(task: str, export_root: Path) -> Source:
    export_dir = Path(export_root) / task
    if not (export_dir / MODEL_FILE).is_file():
        raise ModelLoadError(
            f"task {task!r}: no model package at {export_dir} ({MODEL_FILE} missing): "
            f"run `dvc repro export@{task}` or set serve.export_root"
        )
    return Source(task, export_dir, registered_name(task), package_version(export_dir))


def resolve_registry(task: str, alias: str, download_root: Path) -> Source:
    """`models:/emergent-<task>@<alias>`: download the pyfunc model, find its export dir."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = registered_name(task)
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        raise ModelLoadError(
            f"task {task!r}: cannot resolve models:/{name}@{alias}: {err.message}"
        ) from err
    return download_version(task, str(version.version), download_root, alias)


def download_version(
    task: str, version: str, download_root: Path, alias: str | None = None
) -> Source:
    """`models:/emergent-<task>/<version>`: download the pyfunc model, find its export dir.
    By number, so a caller that read an alias once (the promotion gate) scores that very
    version even if the alias moves meanwhile."""
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    name = registered_name(task)
    dst = Path(download_root) / name / version
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(dst))
        )
    except MlflowException as err:
        raise ModelLoadError(
            f"task {task!r}: cannot download models:/{name}/{version}: {err.message}"
        ) from err
    mlmodel = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
    try:
        rel = mlmodel["flavors"]["python_function"]["artifacts"]["export_dir"]["path"]
    except (KeyError, TypeError) as err:
        raise ModelLoadError(
            f"{local}/MLmodel: no `export_dir` artifact (not an emergent model)"
        ) from err
    return Source(task, local / rel, name, version, alias)


def load(source: Source, threads: int | None, warmup_batches: int) -> Loaded:
    """Open the ONNX session and warm it up; any failure becomes one clear ModelLoadError."""
    try:
        predictor = Predictor(source.export_dir, task=source.task, threads=threads)
        json.loads((source.export_dir / "labels.json").read_text(encoding="utf-8"))
        rows = []
        for _ in range(max(1, warmup_batches)):
            rows = predictor.predict(["warm up the model", "a second, longer warm-up text here"])
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(
            f"task {source.task!r}: cannot load the model package {source.export_dir}: "
            f"{type(err).__name__}: {err}"
        ) from err
    kind = "entities" if "entities" in rows[0] else "classes"
    log.info(
        "loaded %s version %s (%s) from %s", source.name, source.version, kind, source.export_dir
    )
    return Loaded(predictor, source, kind)


class Slot:
    """The current model of one task. Readers take `slot.current` once per batch."""

    def __init__(self, loaded: Loaded) -> None:
        self.current = loaded
        self.lock = threading.Lock()  # one reload at a time

    def swap(self, loaded: Loaded) -> Loaded:
        old, self.current = self.current, loaded
        return old
