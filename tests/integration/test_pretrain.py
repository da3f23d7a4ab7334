"""Tokenizer + pretrain stages end to end on smoke data: outputs, resume after a kill, DDP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emergent.config import Paths
from emergent.stages import run_stage
from tests.conftest import git_env, smoke_cfg, smoke_project

# Pretrains smoke models (one killed and resumed, one on two processes).
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_stage_process(root: Path, stage: str) -> subprocess.Popen:
    env = git_env()
    env["EMERGENT_ROOT"] = str(root)
    return subprocess.Popen(
        [sys.executable, "-m", "emergent.stages", stage],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_pretrain_writes_hf_model_metrics_and_plots(tmp_path: Path) -> None:
    root = smoke_project(tmp_path / "p")
    cfg = smoke_cfg()
    run_stage("pretrain", cfg, Paths.for_dvc(root))
    metrics = json.loads((root / "metrics/pretrain.json").read_text())
    assert {
        "val_loss",
        "perplexity",
        "masked_accuracy",
        "tokens_per_second",
        "train_seconds",
    } <= set(metrics)
    assert metrics["global_step"] == cfg.pretrain.max_steps and metrics["tokens_per_second"] > 0
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["val_loss"], rel=1e-4)
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(str(root / "models/pretrained"))
    assert model.config.hidden_size == 32
    # Trained without dropout (pretrain.dropout: 0), saved with the model's own rates.
    assert cfg.pretrain.dropout == 0.0
    assert model.config.hidden_dropout_prob == cfg.model.config.hidden_dropout_prob > 0
    assert (root / "models/pretrained/model.safetensors").is_file()
    train_rows = (root / "plots/pretrain/train.csv").read_text().splitlines()
    assert train_rows[0] == "step,train_loss,lr" and len(train_rows) == cfg.pretrain.max_steps + 1
    assert (root / "plots/pretrain/curves.png").stat().st_size > 1000
    assert not list((root / "checkpoints" / "pretrain").glob("*/last.ckpt")), "cleaned on success"


def test_pretrain_skip_and_snapshots(smoke_pretrained: Path, tmp_path: Path) -> None:
    root = tmp_path  # outputs here; prepared data and tokenizer from the session project
    paths = Paths(smoke_pretrained, root)
    run_stage("pretrain", smoke_cfg("pretrain.max_steps=0", tmp=tmp_path), paths)
    metrics = json.loads((root / "metrics/pretrain.json").read_text())
    assert metrics["skipped"] is True and metrics["global_step"] == 0
    assert (root / "models/pretrained/model.safetensors").is_file()

    cfg = smoke_cfg("pretrain.snapshots=[0.0,0.5]", tmp=tmp_path)
    run_stage("pretrain", cfg, paths)
    metrics = json.loads((root / "metrics/pretrain.json").read_text())
    assert metrics["skipped"] is False and metrics["global_step"] == cfg.pretrain.max_steps
    snapshots = root / "models/pretrained/snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["step-0", "step-3"]
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    AutoTokenizer.from_pretrained(str(snapshots / "step-3"))
    early = AutoModelForMaskedLM.from_pretrained(str(snapshots / "step-0"))
    final = AutoModelForMaskedLM.from_pretrained(str(root / "models/pretrained"))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not early.state_dict()[name].equal(final.state_dict()[name]), "trained in between"


def test_killed_run_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    steps = 400
    root = smoke_project(
        tmp_path / "p",
        f"pretrain.max_steps={steps}",
        "pretrain.checkpoint_every_n_steps=20",
        "pretrain.val_check_interval=100",
        "trainer.enable_progress_bar=false",
    )
    proc = run_stage_process(root, "pretrain")
    deadline = time.time() + 240
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((root / "checkpoints" / "pretrain").glob("*/last.ckpt"))
        if found:
            ckpt = found[0]
            time.sleep(1.0)  # let it get past the checkpoint, then kill it mid-way
            break
        time.sleep(0.2)
    assert ckpt is not None and proc.poll() is None, "run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (root / "metrics/pretrain.json").exists()

    second = run_stage_process(root, "pretrain")
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    metrics = json.loads((root / "metrics/pretrain.json").read_text())
    assert metrics["resumed_from_step"] > 0
    assert metrics["global_step"] == steps
    assert metrics["steps_this_run"] == steps - metrics["resumed_from_step"]
    rows = (root / "plots/pretrain/train.csv").read_text().splitlines()[1:]
    assert int(rows[0].split(",")[0]) == metrics["resumed_from_step"] + 1, "no step repeated"


def test_ddp_two_processes_rank_zero_writes(tmp_path: Path) -> None:
    root = smoke_project(tmp_path / "p", "trainer=ddp", "trainer.enable_progress_bar=false")
    proc = run_stage_process(root, "pretrain")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "world_size: 2" in out or "MEMBER: 2/2" in out, out[-3000:]
    metrics = json.loads((root / "metrics/pretrain.json").read_text())
    assert metrics["global_step"] == smoke_cfg().pretrain.max_steps
    import mlflow

    runs = mlflow.search_runs(experiment_names=["pretrain"])
    assert len(runs) == 1, "only rank 0 logs to MLflow"
