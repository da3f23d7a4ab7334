"""One thin module per DVC stage: config in, library calls, outputs and an MLflow run out.
The commands that are not DVC stages live in `emergent.commands`; STAGES names both, so
`python -m emergent <name>` and `run_stage` reach either.

Every stage module exposes `run(cfg, paths, *, settings)`, or `run(cfg, paths, task, *,
settings)` for a per-task stage (`emergent.stages.per_task` resolves the task's name there, so
this module and the stages that do not need one never import `emergent.tasks`). `settings` is
the validated, typed config (`emergent.schema.Settings`), which stage code reads; `cfg` is the
same config as composed, for the library functions that still take it and for MLflow. The same
function serves DVC (`python -m emergent.stages <stage>`, reading params.yaml) and the Hydra
CLI (`python -m emergent <stage> key=value`).
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.errors import StageError
from emergent.schema import Settings, validate_config

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
    "monitor": "emergent.stages.monitor",  # a DVC stage that always runs (`always_changed`)
    # commands (not DVC stages): emergent/commands/
    "promote": "emergent.commands.promote",
    "loop": "emergent.commands.loop",  # one continuous-training iteration (promote + reload)
    "predict": "emergent.commands.predict",
    "serve": "emergent.commands.serve",
    "keys": "emergent.commands.keys",
    "feedback": "emergent.commands.feedback",
    "tune": "emergent.commands.tune",
    "seeds": "emergent.commands.seeds",
    "versus": "emergent.commands.versus",  # fine-tuned models side by side, paired intervals
}

# Stages that run once per task (DVC `foreach`).
TASK_STAGES: set[str] = {
    "finetune",
    "evaluate",
    "export",
    "promote",
    "predict",
    "seeds",
    "loop",
    "versus",
}

# Commands taking their own arguments (`keys add --scope predict`, `monitor export`, `feedback
# export`): words and flags that are not `key=value` overrides reach them as `argv`.
ARGV_STAGES: set[str] = {"keys", "monitor", "feedback"}


def run_stage(
    name: str,
    cfg: DictConfig,
    paths: Paths,
    task: str | None = None,
    settings: Settings | None = None,
    **kwargs: object,
) -> None:
    """Run a stage; a per-task stage gets the name `task` (or None: `cfg.task`) and builds the
    `Task` itself. `settings` is `cfg` validated (both CLIs pass what they checked, so nothing
    is validated twice); a caller that made `cfg` itself leaves it out and it is checked here."""
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    if settings is None:
        settings = validate_config(cfg)
    module = importlib.import_module(STAGES[name])
    if name in TASK_STAGES:
        module.run(cfg, paths, task=task, settings=settings, **kwargs)
    else:
        module.run(cfg, paths, settings=settings, **kwargs)
