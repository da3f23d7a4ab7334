"""One thin module per DVC stage: config in, library calls, outputs and an MLflow run out.

Every stage module exposes `run(cfg, paths, task=None)`. The same function serves DVC
(`python -m emergent.stages <stage>`, reading params.yaml) and the Hydra CLI
(`python -m emergent <stage> key=value`).
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from emergent.config import Paths

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
}

# Stages that run once per task (DVC `foreach`).
TASK_STAGES: set[str] = {"finetune", "evaluate", "export", "promote", "predict"}


class StageError(RuntimeError):
    """A stage failed for a reason the user should read (no traceback needed)."""


def run_stage(
    name: str, cfg: DictConfig, paths: Paths, task: str | None = None, **kwargs: object
) -> None:
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    module = importlib.import_module(STAGES[name])
    if name in TASK_STAGES:
        task = task or cfg.get("task")
        if task not in cfg.tasks:
            raise StageError(f"unknown task {task!r}; choose one of {list(cfg.tasks)}")
        cfg = cfg.copy()
        cfg.task = task  # so the logged config says which task ran
        module.run(cfg, paths, task=task, **kwargs)
    else:
        module.run(cfg, paths)
