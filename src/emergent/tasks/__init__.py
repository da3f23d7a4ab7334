"""Tasks: one interface (`Task`) and its kinds, built from `conf/tasks/<name>.yaml`.

`get_task(cfg, name)` is the only way code outside this package learns what a task is;
nothing else tests a task's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emergent.errors import ConfigError
from emergent.tasks.base import Evaluation, Headline, Task, Window
from emergent.tasks.sequence_classification import SequenceClassificationTask
from emergent.tasks.token_classification import TokenClassificationTask

__all__ = [
    "Evaluation",
    "Headline",
    "SequenceClassificationTask",
    "Task",
    "TokenClassificationTask",
    "Window",
    "all_tasks",
    "get_task",
    "task_from_spec",
    "task_names",
    "task_spec",
]


def task_names(cfg: Any) -> list[str]:
    """The configured tasks, in order (the DVC `foreach` iterates over the same dict)."""
    return list(cfg.tasks)


def task_spec(cfg: Any, name: str) -> dict[str, Any]:
    """The plain-dict definition of a task (saved with exported models, so serving can
    rebuild the task without the project's config)."""
    from omegaconf import OmegaConf

    if name not in cfg.tasks:
        raise ConfigError("task", f"unknown task {name!r}; choose one of {task_names(cfg)}")
    spec = OmegaConf.to_container(cfg.tasks[name], resolve=True)
    assert isinstance(spec, dict)
    return {**spec, "name": name}


def task_from_spec(spec: Mapping[str, Any]) -> Task:
    """Build a task from its definition (`_target_` names the kind)."""
    import importlib

    target = str(spec.get("_target_", ""))
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(
            f"tasks.{spec.get('name')}._target_", f"cannot import {target!r}"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"tasks.{spec.get('name')}._target_", f"{target!r} is not a Task")
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"tasks.{spec.get('name')}", str(err)) from err


def get_task(cfg: Any, name: str) -> Task:
    """The task called `name` in the composed config."""
    return task_from_spec(task_spec(cfg, name))


def all_tasks(cfg: Any) -> list[Task]:
    """Every configured task, in order."""
    return [get_task(cfg, name) for name in task_names(cfg)]
