"""One thin module per DVC stage: config in, library calls, outputs and an MLflow run out.

Every stage module exposes `run(cfg, paths, task=None)`. The same function serves DVC
(`python -m emergent.stages <stage>`, reading params.yaml) and the Hydra CLI
(`python -m emergent <stage> key=value`).
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.errors import StageError
from emergent.tasks import get_task

__all__ = ["STAGES", "TASK_STAGES", "StageError", "run_stage"]

STAGES: dict[str, str] = {
    "ingest": "emergent.stages.ingest",
    "validate": "emergent.stages.validate",
    "tokenizer": "emergent.stages.tokenizer",
    "pretrain": "emergent.stages.pretrain",
    "finetune": "emergent.stages.finetune",
    "evaluate": "emergent.stages.evaluate",
    "export": "emergent.stages.export",
    "fewshot": "emergent.stages.fewshot",
    # commands (not DVC stages)
    "promote": "emergent.stages.promote",
    "predict": "emergent.stages.predict",
    "serve": "emergent.stages.serve",
    "keys": "emergent.stages.keys",
    "monitor": "emergent.stages.monitor",
    "seeds": "emergent.stages.seeds",
}

# Stages that run once per task (DVC `foreach`).
TASK_STAGES: set[str] = {"finetune", "evaluate", "export", "promote", "predict", "seeds"}

# Commands taking their own arguments (`keys add --scope predict`, `monitor export`): words and
# flags that are not `key=value` overrides reach them as `argv`.
ARGV_STAGES: set[str] = {"keys", "monitor"}


def run_stage(
    name: str, cfg: DictConfig, paths: Paths, task: str | None = None, **kwargs: object
) -> None:
    """Run a stage; per-task stages get the `Task` object named by `task` (or `cfg.task`)."""
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    module = importlib.import_module(STAGES[name])
    if name in TASK_STAGES:
        task = task or cfg.get("task")
        task_obj = get_task(cfg, str(task))
        cfg = cfg.copy()
        cfg.task = task_obj.name  # so the logged config says which task ran
        module.run(cfg, paths, task=task_obj, **kwargs)
    else:
        module.run(cfg, paths, **kwargs)
