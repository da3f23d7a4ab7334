"""A small populated MLflow store for looking at the UI: the smoke pipeline for two tasks.

`python -m tests.browser.smoke_db OUT` runs ingest, validate, tokenizer, pretrain and, for
ner and sentiment, finetune and evaluate (`experiment=smoke`) in the project folder OUT/p,
logging into OUT/mlflow.db (artifacts in OUT/mlartifacts). Two fine-tuning runs per task
(two learning rates, as `dvc exp run -S finetune.shared.lr=...` would) give the
compare view something to compare. About a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from emergent.config import Paths, params_text
from emergent.stages import run_stage
from tests.conftest import ROOT, smoke_cfg

TASKS = ("ner", "sentiment")
LEARNING_RATES = ("1e-3", "3e-3")


def build(out: Path) -> Path:
    """Populate OUT/mlflow.db; returns its path. Leaves OUT/p with the project's outputs."""
    out.mkdir(parents=True, exist_ok=True)
    db = out / "mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    root = out / "p"
    (root / "conf").mkdir(parents=True, exist_ok=True)

    def cfg(*overrides: str) -> DictConfig:
        built = smoke_cfg(*overrides)
        built.mlflow.artifact_dir = str(out / "mlartifacts")
        return built

    (root / "params.yaml").write_text(params_text(cfg()), encoding="utf-8")
    paths = Paths.for_dvc(root)
    run_stage("ingest", cfg(), Paths(ROOT, root))
    for stage in ("validate", "tokenizer", "pretrain"):
        run_stage(stage, cfg(), paths)
    for task in TASKS:
        for lr in LEARNING_RATES:
            override = f"finetune.shared.lr={lr}"
            os.environ["DVC_EXP_NAME"] = f"smoke-{task}-lr{lr}"
            try:
                run_stage("finetune", cfg(override), paths, task=task)
                run_stage("evaluate", cfg(override), paths, task=task)
            finally:
                del os.environ["DVC_EXP_NAME"]
    return db


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(build(Path(sys.argv[1]).resolve()))
