"""MLflow model registry: register exported models with their lineage, read the version an
alias points at, move `champion`.

Each registered version carries tags that make the registry show where it came from:
`test_metric` (its int8 headline on the test split, in the task's own scale), and its lineage:
`parent_version` (the champion when it was registered, `none` for the first), and the user
feedback it was trained with (`feedback_sha256`, `feedback_examples`; `none` without any).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emergent.logfilters import DropMessage
from emergent.serving.slots import registered_name

log = logging.getLogger(__name__)

METRIC_TAG = "test_metric"
PARENT_TAG = "parent_version"
FEEDBACK_SHA_TAG = "feedback_sha256"
FEEDBACK_EXAMPLES_TAG = "feedback_examples"
NONE = "none"  # a lineage tag's value when there is no parent / no feedback


@dataclass(frozen=True)
class Lineage:
    """Where a new version comes from: the champion it is meant to replace and the feedback
    it saw (the prepared manifest's `feedback.<task>` entry)."""

    parent_version: str | None = None
    feedback_sha256: str | None = None
    feedback_examples: int | None = None

    def tags(self) -> dict[str, str]:
        values = {
            PARENT_TAG: self.parent_version,
            FEEDBACK_SHA_TAG: self.feedback_sha256,
            FEEDBACK_EXAMPLES_TAG: self.feedback_examples,
        }
        return {k: NONE if v is None else str(v) for k, v in values.items()}


@dataclass(frozen=True)
class Version:
    """One registered version, as the gate and its decision record need it."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]

    @property
    def test_metric(self) -> float:
        return float(self.tags.get(METRIC_TAG, "nan"))

    def to_json(self) -> dict[str, Any]:
        metric = self.test_metric
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            METRIC_TAG: None if math.isnan(metric) else metric,
            **{k: self.tags.get(k, NONE) for k in Lineage().tags()},
        }


def alias_version(task: str, alias: str) -> Version | None:
    """The version `emergent-<task>@<alias>` points at, or None (no such alias or model)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = registered_name(task)
    try:
        found = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return Version(name, str(found.version), str(found.run_id or ""), dict(found.tags or {}))


def lineage(task: str, feedback: dict[str, Any] | None) -> Lineage:
    """The lineage of a version registered now: today's champion is its parent; `feedback`
    is the prepared manifest's entry for the task (None: trained without feedback)."""
    parent = alias_version(task, "champion")
    return Lineage(
        parent_version=parent.version if parent else None,
        feedback_sha256=str(feedback["sha256"]) if feedback else None,
        feedback_examples=int(feedback["train"]) if feedback else None,
    )


def register(
    task: str,
    export_dir: Path,
    metric: float,
    example_texts: list[str],
    origin: Lineage | None = None,
) -> str:
    """Log the pyfunc model into the active run, register it with its metric and lineage
    tags, and alias it `candidate`."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from emergent.serving.pyfunc import OnnxTaskModel

    name = registered_name(task)
    # MLflow's caution about pickled models, for a class that is our own and ships with the
    # package it unpickles from.
    pickle_note = DropMessage("Passing a Python object as `python_model`")
    logging.getLogger("mlflow.pyfunc").addFilter(pickle_note)
    try:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=OnnxTaskModel(),
            artifacts={"export_dir": str(export_dir)},
            model_config={"task": task},
            signature=ModelSignature(inputs=Schema([ColSpec("string", "text")])),
            input_example=pd.DataFrame({"text": example_texts}),
            registered_model_name=name,
        )
    finally:
        logging.getLogger("mlflow.pyfunc").removeFilter(pickle_note)
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    tags = {METRIC_TAG: f"{metric:.6f}", **(origin or Lineage()).tags()}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, "candidate", version)
    log.info("registered %s version %s as candidate (%s)", name, version, tags)
    return version


def set_champion(task: str, version: str) -> None:
    """Point `emergent-<task>@champion` at `version` (the gate decided; see registry.gate)."""
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(registered_name(task), "champion", version)
