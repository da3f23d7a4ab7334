"""`seeds`: one task fine-tuned and scored over several seeds, summarised as mean and spread,
each seed an MLflow run nested under the command's run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from emergent.config import Paths
from emergent.errors import ConfigError
from emergent.stages import run_stage
from tests.conftest import ROOT, git_env, smoke_cfg

# Fine-tunes once per seed on the session's pretrained smoke model.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_seeds_summarise_the_runs_they_log(smoke_pretrained: Path, tmp_path: Path) -> None:
    cfg = smoke_cfg("seeds.list=[1,2]", tmp=tmp_path)
    run_stage("seeds", cfg, Paths(smoke_pretrained, tmp_path / "out"), task="sentiment")
    summary = json.loads((tmp_path / "out" / "reports" / "sentiment" / "seeds.json").read_text())
    assert summary["seeds"] == [1, 2] and [r["seed"] for r in summary["runs"]] == [1, 2]
    assert not (
        tmp_path / "out" / "seeds" / "sentiment" / "seed-1" / "models" / "sentiment"
    ).exists()

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = mlflow.MlflowClient()
    logged = [client.get_run(r["mlflow_run_id"]) for r in summary["runs"]]
    parents = {run.data.tags.get("mlflow.parentRunId") for run in logged}
    assert len(parents) == 1 and None not in parents, "both seed runs nest under one parent"
    parent = client.get_run(parents.pop())
    assert parent.data.tags["dvc_stage"] == "seeds"
    assert [run.data.params["seed"] for run in logged] == ["1", "2"]
    for metric in ("test_accuracy", "validation_accuracy", "test_f1_macro"):
        a, b = (run.data.metrics[metric] for run in logged)  # read back from each run
        assert summary["mean"][metric] == pytest.approx((a + b) / 2)
        assert summary["std"][metric] == pytest.approx(abs(a - b) / math.sqrt(2))
        assert parent.data.metrics[f"mean_{metric}"] == pytest.approx((a + b) / 2)


def test_seeds_need_distinct_integers(smoke_pretrained: Path, tmp_path: Path) -> None:
    for bad in ("seeds.list=[1,1]", "seeds.list=[]", "seeds.list=[a]"):
        with pytest.raises(ConfigError, match=r"seeds\.list"):
            run_stage("seeds", smoke_cfg(bad, tmp=tmp_path), Paths(smoke_pretrained, tmp_path))


def test_the_seeds_command_prints_like_a_stage(smoke_pretrained: Path, tmp_path: Path) -> None:
    """As a user runs it: each seed's lines are the stage's own, with none of Lightning's
    device lines or a tiny run's log_every_n_steps warning (seconds of import and training)."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "conf", project / "conf")
    env = git_env()
    env.update(EMERGENT_ROOT=str(project), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    run_dir = project / "outputs" / "seeds"
    args = [sys.executable, "-m", "emergent", "seeds", "task=debate", "experiment=smoke"]
    args += ["seeds.list=[1]", f"paths.input_dir={smoke_pretrained}", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "reports" / "debate" / "seeds.json").read_text())["seeds"] == [1]
    printed = done.stdout + done.stderr
    assert "emergent.commands.seeds" in printed  # its own summary line
    for note in ("GPU available", "TPU available", "log_every_n_steps", "stopped: `max_"):
        assert note not in printed, (note, printed[-3000:])
