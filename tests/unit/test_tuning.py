"""The tuning library without training: the search space against the fine-tuning config, and two
worker processes draining one real SQLite study (a sleep stands in for fine-tuning, so the
queue and the claims are what is tested; tests/integration/test_tune.py trains for real)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from emergent.config import compose, finetune_config
from emergent.errors import ConfigError
from emergent.schema import validate_config
from emergent.tasks import all_tasks, get_task
from emergent.tuning.space import apply_overrides, finetune_overrides, parse_space
from emergent.tuning.study import work
from tests.conftest import ROOT

N_TRIALS = 10


def test_default_space_names_real_finetune_keys_for_every_task() -> None:
    cfg = compose([], ROOT / "conf")
    for task in all_tasks(cfg):
        dims = parse_space(cfg.tune.space, finetune_config(cfg, task.name))
        names = [d.name for d in dims]
        assert names == ["lr", "weight_decay", "dropout", "frozen_layers", "warmup_ratio", "epochs"]
        lr = dims[0]
        assert lr.log and lr.kind == "float" and lr.keys == ("lr",)
        assert dims[3].kind == "int" and dims[3].keys == ("freeze.layers",)


def test_a_trial_sets_the_task_section_and_wins_over_shared() -> None:
    cfg = compose([], ROOT / "conf")
    dims = parse_space(cfg.tune.space, finetune_config(cfg, "sentiment"))
    params = {"lr": 3e-5, "dropout": 0.2, "frozen_layers": 2, "epochs": 4}
    trial_cfg = apply_overrides(cfg, "sentiment", finetune_overrides(dims, params))
    merged = finetune_config(trial_cfg, "sentiment")
    assert merged.lr == 3e-5  # finetune.sentiment.lr was 2e-4
    assert merged.max_epochs == 4
    assert merged.freeze.layers == 2
    assert merged.dropout.hidden == merged.dropout.attention == merged.dropout.classifier == 0.2
    assert finetune_config(cfg, "sentiment").lr == 2e-4  # the original config is untouched
    assert finetune_config(trial_cfg, "ner").lr == cfg.finetune.shared.lr  # other tasks too


def test_a_space_key_that_is_no_finetune_setting_is_named() -> None:
    cfg = compose(["tune.space.lr.keys=[learning_rate]"], ROOT / "conf")
    with pytest.raises(ConfigError, match=r"^tune\.space\.lr\.keys: 'learning_rate' is not"):
        parse_space(cfg.tune.space, finetune_config(cfg, "ner"))
    cfg = compose(["tune.space.lr.low=0"], ROOT / "conf")
    with pytest.raises(ConfigError, match=r"^tune\.space\.lr: bad range 0.0\.\.0\.001 on a log"):
        parse_space(cfg.tune.space, finetune_config(cfg, "ner"))


def _quick_train(cfg: Any, out_dir: Path, callbacks: list, tags: dict) -> float:
    """Stands in for a fine-tuning run: half a second, then a value from the parameters;
    two-epoch trials are pruned (what the Lightning callback does in the real run)."""
    time.sleep(0.5)
    fcfg = finetune_config(cfg, "debate")
    if fcfg.max_epochs == 2:
        raise optuna.TrialPruned("pruned at validation check 1")
    return float(fcfg.weight_decay)


def _worker(overrides: list[str], conf: str, queue: Any) -> None:
    cfg = compose(overrides, Path(conf))
    task = get_task(cfg, "debate")
    summary = work(
        cfg,
        validate_config(cfg),
        task,
        _quick_train,
        Path(conf).parent / "out",
        echo=lambda _: None,
    )
    queue.put(summary["worker_trials"])


def test_two_workers_run_exactly_the_trials_asked_for(tmp_path: Path) -> None:
    """SQLite by default; EMERGENT_TEST_OPTUNA_STORAGE=postgresql+psycopg://... runs the same
    test against a server (a fresh study name each time)."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    storage = os.environ.get("EMERGENT_TEST_OPTUNA_STORAGE") or f"sqlite:///{tmp_path / 'o.db'}"
    study_name = f"debate-test-{uuid.uuid4().hex[:8]}"
    preset = tmp_path / "conf" / "experiment" / "debate_tuned.yaml"
    overrides = [
        "experiment=smoke",
        "tune=smoke",
        f"tune.n_trials={N_TRIALS}",
        f"tune.storage={storage}",
        f"tune.study_name={study_name}",
        f"tune.preset={preset}",
        "tune.adopt=true",
        "mlflow.enabled=false",
    ]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(overrides, str(tmp_path / "conf"), queue))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    ran = [queue.get(timeout=5) for _ in procs]
    assert sum(ran) == N_TRIALS and min(ran) >= 1, ran  # both worked, neither ran extra

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(N_TRIALS))
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # host:pid of each process
    states = {t.number: t.state for t in trials}
    for trial in trials:
        expected = TrialState.PRUNED if trial.params["epochs"] == 2 else TrialState.COMPLETE
        assert states[trial.number] == expected
    assert TrialState.PRUNED in states.values() and TrialState.COMPLETE in states.values()

    # The preset holds the best complete trial and composes (DVC composes it the same way).
    best = study.best_trial
    assert best.value == max(t.value for t in trials if t.state == TrialState.COMPLETE)
    cfg = compose(["experiment=debate_tuned"], tmp_path / "conf")
    fcfg = finetune_config(cfg, "debate")
    assert fcfg.weight_decay == pytest.approx(best.params["weight_decay"], rel=1e-12)
    assert fcfg.lr == pytest.approx(best.params["lr"], rel=1e-12)
    assert fcfg.max_epochs == 1


def test_a_second_run_on_a_finished_study_runs_nothing(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    overrides = [
        "experiment=smoke",
        "tune=smoke",
        "tune.n_trials=2",
        f"tune.storage=sqlite:///{tmp_path / 'optuna.db'}",
        f"tune.preset={tmp_path / 'preset.yaml'}",
        "mlflow.enabled=false",
    ]
    cfg = compose(overrides, tmp_path / "conf")
    task = get_task(cfg, "debate")
    lines: list[str] = []
    first = work(cfg, validate_config(cfg), task, _quick_train, tmp_path / "out", echo=lines.append)
    again = work(cfg, validate_config(cfg), task, _quick_train, tmp_path / "out", echo=lines.append)
    assert (first["worker_trials"], again["worker_trials"]) == (2, 0)
    assert again["trials"] == 2
    assert lines[0].startswith("created study 'debate-tiny_bert'")
    assert sum(line.startswith("trial ") for line in lines) == 2
    assert lines[-1].startswith("joined study 'debate-tiny_bert'")


def test_the_adopt_flag_is_typed() -> None:
    """`tune.adopt=yes` or a misspelt flag would silently leave the committed preset alone."""
    with pytest.raises(ConfigError, match=r"^tune\.adopt: Input should be a valid boolean"):
        validate_config(compose(["tune.adopt=yes"], ROOT / "conf"))
    with pytest.raises(ConfigError, match=r"^tune\.adopted: unknown key; did you mean tune\.adopt"):
        validate_config(compose(["+tune.adopted=true"], ROOT / "conf"))


def test_a_study_replaces_the_committed_preset_only_when_asked(
    project_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried as a new user would, a smoke study overwrote conf/experiment/<task>_tuned.yaml,
    a real study's preset. Now the preset goes into the run folder; `tune.adopt=true` (here
    on the finished study: no trial runs again) is what replaces the committed one."""
    monkeypatch.setenv("EMERGENT_ROOT", str(project_copy))
    experiments = project_copy / "conf" / "experiment"
    committed = experiments / "debate_tuned.yaml"
    committed.write_text("# @package _global_\n# the preset of a real study\n")
    before = {p.name: p.read_bytes() for p in experiments.iterdir()}
    overrides = [
        "experiment=smoke",
        "tune=smoke",
        "tune.n_trials=2",
        f"tune.storage=sqlite:///{tmp_path / 'optuna.db'}",
        "mlflow.enabled=false",
    ]
    cfg = compose(overrides, project_copy / "conf")
    task = get_task(cfg, "debate")
    summary = work(
        cfg,
        validate_config(cfg),
        task,
        _quick_train,
        tmp_path / "run" / "tune",
        echo=lambda _: None,
    )
    assert summary["worker_trials"] == 2 and summary["best"] is not None
    assert {p.name: p.read_bytes() for p in experiments.iterdir()} == before
    preset = tmp_path / "run" / "tune" / "debate_tuned.yaml"
    assert summary["preset"] == str(preset) and "adopted" not in summary
    assert preset.read_text().startswith("# @package _global_\n")

    adopt = compose([*overrides, "tune.adopt=true"], project_copy / "conf")
    again = work(
        adopt,
        validate_config(adopt),
        task,
        _quick_train,
        tmp_path / "run2" / "tune",
        echo=lambda _: None,
    )
    assert again["worker_trials"] == 0 and again["adopted"] == str(committed)
    assert committed.read_text() == preset.read_text()
    fcfg = finetune_config(compose(["experiment=debate_tuned"], project_copy / "conf"), "debate")
    assert fcfg.weight_decay == pytest.approx(summary["best"]["params"]["weight_decay"])
    assert sorted(p.name for p in experiments.iterdir()) == sorted(before)


def test_the_lightning_callback_reports_every_validation_check(tmp_path: Path) -> None:
    """Two validations per epoch are two reports (Optuna's own callback would report both as
    `step=epoch` and drop the second), and the pruner stops the fit by raising TrialPruned."""
    import lightning as L
    import torch

    from emergent.tuning.trial_pruning import ValidationPruning

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.seen = 0

        def training_step(self, batch: Any, _: int) -> Any:
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch: Any, _: int) -> None:
            self.seen += 1
            self.log("val_score", float(self.seen))  # 1, 2, 3, ... per check

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)), 2)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.ThresholdPruner(upper=2.5),  # prune once a value passes 2.5
    )
    trial = study.ask()
    callback = ValidationPruning(trial, "val_score")
    trainer = L.Trainer(
        max_epochs=3,
        val_check_interval=0.5,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(optuna.TrialPruned, match="validation check 2"):
        trainer.fit(Tiny(), data, data)
    study.tell(trial, state=TrialState.PRUNED)
    frozen = optuna.load_study(study_name=study.study_name, storage=storage).trials[0]
    assert frozen.state == TrialState.PRUNED
    assert frozen.intermediate_values == {0: 1.0, 1: 2.0, 2: 3.0}  # epoch 0 twice, epoch 1 once
    assert callback.last == 3.0
