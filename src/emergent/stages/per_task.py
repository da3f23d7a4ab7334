"""Per-task stages resolve their own `Task`, so only they import the task package.

`run_stage` (in `emergent.stages`) is imported by every stage; were it to build the Task, every
DVC stage, pretraining included, would depend on `tasks/*`, the quality checks and the error
ranking, and a change there would re-run the whole pipeline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.schema import Settings
from emergent.tasks import Task, get_task

StageRun = Callable[..., Any]


def per_task(run: StageRun) -> StageRun:
    """Let `run(cfg, paths, task: Task, *, settings, ...)` be called with the task's name (or
    None: the config's `task`). The config and settings it gets say which task ran (`task`,
    logged with the run)."""

    @functools.wraps(run)
    def by_name(
        cfg: DictConfig,
        paths: Paths,
        task: Task | str | None = None,
        *,
        settings: Settings,
        **kwargs: Any,
    ) -> Any:
        if not isinstance(task, Task):
            task = get_task(cfg, str(task or settings.task))
        cfg = cfg.copy()
        cfg.task = task.name
        settings = settings.model_copy(update={"task": task.name})
        return run(cfg, paths, task, settings=settings, **kwargs)

    return by_name
