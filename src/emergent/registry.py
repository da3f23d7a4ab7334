"""MLflow model registry: register exported models and promote candidates to champion."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from emergent.logfilters import DropMessage
from emergent.serving.models import registered_name

log = logging.getLogger(__name__)

METRIC_TAG = "test_metric"


def register(task: str, export_dir: Path, metric: float, example_texts: list[str]) -> str:
    """Log the pyfunc model into the active run, register it and alias it `candidate`."""
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
    client.set_model_version_tag(name, version, METRIC_TAG, f"{metric:.6f}")
    client.set_registered_model_alias(name, "candidate", version)
    log.info("registered %s version %s as candidate (%s=%.4f)", name, version, METRIC_TAG, metric)
    return version


def promote(task: str, headline: Any) -> dict[str, Any]:
    """Move `champion` to the candidate only when its test headline metric beats the
    champion's (`headline.improved`: higher or lower is better, as the task says)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    name = registered_name(task)
    try:
        candidate = client.get_model_version_by_alias(name, "candidate")
    except MlflowException as err:
        raise LookupError(f"{name} has no candidate: run export@{task} first") from err
    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        champion = None
    cand_metric = float(candidate.tags.get(METRIC_TAG, "nan"))
    result: dict[str, Any] = {
        "model": name,
        "candidate": candidate.version,
        "candidate_metric": cand_metric,
    }
    if champion is not None:
        champ_metric = float(champion.tags.get(METRIC_TAG, "nan"))
        result.update(champion=champion.version, champion_metric=champ_metric)
        if champion.version == candidate.version or not headline.improved(
            cand_metric, champ_metric
        ):
            result["promoted"] = False
            return result
    client.set_registered_model_alias(name, "champion", candidate.version)
    result["promoted"] = True
    return result
