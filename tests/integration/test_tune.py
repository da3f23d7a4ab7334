"""`python -m emergent tune`: two worker processes share one Optuna study in one SQLite file.

Real Optuna storage, real MLflow store, real fine-tuning (experiment=smoke, tune=smoke: a
ThresholdPruner no score can pass prunes every trial that reaches its second validation check,
so trials with epochs=2 are pruned and trials with epochs=1 complete, deterministically).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, git_env

# Minutes on the shared 2-core machine (two processes importing torch, then 4 tiny trials).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_TRIALS = 4
TASK = "debate"


def _worker(
    project: Path, inputs: Path, storage: str, name: str, env: dict[str, str], *extra: str
) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "emergent",
        "tune",
        f"task={TASK}",
        "experiment=smoke",
        "tune=smoke",
        f"tune.n_trials={N_TRIALS}",
        f"tune.storage={storage}",
        f"paths.input_dir={inputs}",
        f"hydra.run.dir={project / 'outputs' / name}",
        *extra,
    ]
    return subprocess.Popen(
        args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_workers_share_one_study(smoke_pretrained: Path, tmp_path: Path) -> None:
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from emergent.config import compose, finetune_config

    project = tmp_path / "project"
    shutil.copytree(ROOT / "conf", project / "conf")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The MLflow store exists before the workers start (two processes creating its schema at
    # once is the tracking store's problem, not the study's).
    mlflow.MlflowClient(mlflow_uri).search_experiments()
    env = git_env()
    env.update(EMERGENT_ROOT=str(project), MLFLOW_TRACKING_URI=mlflow_uri)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])

    experiments = project / "conf" / "experiment"
    committed = {p.name: p.read_bytes() for p in experiments.iterdir()}
    start = time.perf_counter()
    workers = [_worker(project, smoke_pretrained, storage, f"w{i}", env) for i in (1, 2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    wall = time.perf_counter() - start
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    print(f"two workers, {N_TRIALS} trials: {wall:.1f} s wall")
    for out, _ in outputs:
        print(out)

    # A smoke study leaves the committed presets alone: each worker writes the preset into its
    # run folder and prints the one command that adopts it.
    assert {p.name: p.read_bytes() for p in experiments.iterdir()} == committed
    for name, (out, _) in zip(("w1", "w2"), outputs, strict=True):
        if "no complete trial yet" in out:  # finished while the other's trial still ran
            continue
        run_preset = project / "outputs" / name / "tune" / f"{TASK}_tuned.yaml"
        assert run_preset.read_text().startswith("# @package _global_\n")
        shown = f"outputs/{name}/tune/{TASK}_tuned.yaml conf/experiment/{TASK}_tuned.yaml"
        assert f"adopt it: cp {shown}" in out, out  # paths as typed from the project root
    # ... and prints like the stages: no Lightning device lines, no tiny-run warnings.
    for out, err in outputs:
        for note in ("GPU available", "TPU available", "log_every_n_steps", "stopped: `max_"):
            assert note not in out + err, (note, err[-3000:])

    # Adopting takes the flag: on the finished study it runs no trial and writes the preset.
    adopter = _worker(project, smoke_pretrained, storage, "adopt", env, "tune.adopt=true")
    adopted, err = adopter.communicate(timeout=600)
    assert adopter.returncode == 0, err[-3000:]
    assert "this worker ran 0" in adopted and "(adopted; use:" in adopted, adopted

    # Exactly the trials asked for, all workers together, each number once.
    ran = [int(re.search(r"this worker ran (\d+)", out).group(1)) for out, _ in outputs]  # type: ignore[union-attr]
    assert sum(ran) == N_TRIALS, outputs
    study = optuna.load_study(study_name=f"{TASK}-tiny_bert", storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(N_TRIALS))
    # One progress line per trial, across both workers' output.
    lines = [ln for out, _ in outputs for ln in out.splitlines() if ln.startswith("trial ")]
    assert sorted(int(ln.split()[1]) for ln in lines) == list(range(N_TRIALS))

    # Pruning through the Lightning callback, recorded in the study.
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) + len(by_state[TrialState.PRUNED]) == N_TRIALS
    assert by_state[TrialState.PRUNED] and by_state[TrialState.COMPLETE], [
        (t.number, t.params["epochs"]) for t in trials
    ]
    for trial in by_state[TrialState.PRUNED]:
        assert trial.params["epochs"] == 2
        assert sorted(trial.intermediate_values) == [0, 1]  # pruned at the second check
    for trial in by_state[TrialState.COMPLETE]:
        assert trial.params["epochs"] == 1
        assert list(trial.intermediate_values) == [0]
        assert trial.value == pytest.approx(trial.intermediate_values[0])

    # The preset: the best complete trial's values under finetune.<task>, on top of smoke.
    best = study.best_trial
    preset = project / "conf" / "experiment" / f"{TASK}_tuned.yaml"
    assert preset.read_text().startswith("# @package _global_\n")
    cfg = compose([f"experiment={TASK}_tuned", f"task={TASK}"], project / "conf")
    fcfg = finetune_config(cfg, TASK)
    assert cfg.model.name == "tiny_bert"  # the base experiment (smoke) comes with it
    assert fcfg.lr == pytest.approx(best.params["lr"], rel=1e-12)
    assert fcfg.weight_decay == pytest.approx(best.params["weight_decay"], rel=1e-12)
    assert fcfg.dropout.attention == pytest.approx(best.params["dropout"], rel=1e-12)
    assert fcfg.freeze.layers == best.params["frozen_layers"]
    assert fcfg.max_epochs == 1
    # `dvc exp run -S experiment=<task>_tuned` composes params.yaml with DVC's own Hydra call.
    from dvc.utils.hydra import compose_and_dump

    params = tmp_path / "params.yaml"
    conf = str(project / "conf")
    compose_and_dump(params, conf, None, "config", str(project), [f"experiment={TASK}_tuned"])
    dvc_params = yaml.safe_load(params.read_text())
    assert dvc_params["finetune"][TASK]["lr"] == pytest.approx(best.params["lr"], rel=1e-12)

    # MLflow: one parent run for the study, every trial a run nested in it.
    client = mlflow.MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(TASK)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("dvc_stage") == "tune"]
    assert len(parents) == 1
    parent = parents[0]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == list(range(N_TRIALS))
    for run in children:
        trial = trials[int(run.data.tags["optuna_trial"])]
        assert run.data.tags["optuna_state"] == trial.state.name
        if trial.state == TrialState.PRUNED:
            assert run.info.status == "KILLED"
        else:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["best_val"] == pytest.approx(trial.value)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial"] == str(best.number)
    assert parent.data.metrics["trials_pruned"] == len(by_state[TrialState.PRUNED])
