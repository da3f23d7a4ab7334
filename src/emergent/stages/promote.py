"""Command `promote`: move the registry alias `champion` to the current `candidate` of
`emergent-{task}` when its test metric beats the champion's."""

from __future__ import annotations

import json

import mlflow
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.errors import StageError
from emergent.registry import promote
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tracking import tracking_uri


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task) -> None:
    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        result = promote(task.name, task.headline)
    except LookupError as err:
        raise StageError(str(err)) from err
    print(json.dumps(result))
