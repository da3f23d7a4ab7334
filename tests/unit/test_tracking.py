"""Tracking: one MLflow run per stage execution with config, params and lineage tags."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import psutil
import pytest
from omegaconf import OmegaConf

from emergent.errors import ConfigError
from emergent.schema import validate_config
from emergent.tracking import (
    Tracker,
    ensure_experiment,
    flatten,
    mlflow_section,
    run_name,
    stage_run,
    tracking_uri,
)
from tests.conftest import ROOT


def test_flatten_nested_config() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {
        "a.b": "1",
        "a.c.d": "x",
        "e": "[1, 2]",
    }


def test_relative_sqlite_uri_is_anchored_at_root(cfg, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cfg.mlflow.tracking_uri = "sqlite:///mlflow.db"
    assert tracking_uri(cfg, ROOT) == f"sqlite:///{ROOT / 'mlflow.db'}"


def test_a_stage_run_given_the_settings_logs_the_same_params(cfg) -> None:
    """A migrated stage configures its run from the typed settings (here an `mlflow.experiments`
    entry only they hold); the params and config.yaml it logs stay the composed config's."""
    settings = validate_config(cfg)
    settings.mlflow.experiments["ner"] = "ner-typed"
    with stage_run(cfg, "evaluate", "ner", extra_tags={"task": "ner"}) as before:
        pass
    with stage_run(cfg, "evaluate", "ner", extra_tags={"task": "ner"}, settings=settings) as now:
        pass
    runs = [mlflow.get_run(t.run_id) for t in (before, now)]
    assert runs[0].data.params == runs[1].data.params
    assert runs[1].data.params["evaluate.bootstrap.resamples"] == str(
        cfg.evaluate.bootstrap.resamples
    )
    names = [mlflow.get_experiment(r.info.experiment_id).name for r in runs]
    assert names == ["ner", "ner-typed"]
    client = mlflow.MlflowClient()
    texts = [
        Path(client.download_artifacts(r.info.run_id, "config.yaml")).read_text() for r in runs
    ]
    assert texts[0] == texts[1] == OmegaConf.to_yaml(cfg)


def test_the_mlflow_section_of_a_composed_config_is_checked(cfg) -> None:
    """The training layer still hands `tracking_uri` the composed config: its `mlflow` section
    is read typed all the same, and a bad value is named."""
    assert mlflow_section(cfg) == validate_config(cfg).mlflow
    cfg.mlflow.enabled = "yes"
    with pytest.raises(ConfigError, match=r"^mlflow\.enabled: Input should be a valid boolean"):
        mlflow_section(cfg)


def test_stage_run_logs_params_tags_and_config(cfg, tmp_path: Path) -> None:
    born = psutil.Process().create_time()
    before = time.time() - born
    with stage_run(cfg, "ingest", "data", data_sha256="abc") as tracker:
        tracker.log_metrics({"rows": {"train": 10}, "note": "text is skipped"})
        tracker.log_metrics({"minilm@step-45.zero_shot.k0.accuracy": 0.5})  # '@': refused
        run_id = tracker.run_id
    after = time.time() - born
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dvc_stage"] == "ingest" and run.data.tags["data_sha256"] == "abc"
    assert run.data.tags["git_commit"] and run.data.tags["git_dirty"] in {"true", "false"}
    assert run.data.params["model.name"] == "tiny_bert"
    # the process's age when the run opened: what a stage's imports and config cost
    startup = run.data.metrics.pop("startup_s")
    assert before - 0.01 <= startup <= after + 0.01
    assert run.data.metrics == {"rows.train": 10.0, "minilm_step-45.zero_shot.k0.accuracy": 0.5}
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.name == "data"
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id)]
    assert "config.yaml" in artifacts


def test_failed_stage_marks_the_run_failed(cfg) -> None:
    with pytest.raises(RuntimeError), stage_run(cfg, "validate", "data") as tracker:
        run_id = tracker.run_id
        raise RuntimeError("boom")
    assert mlflow.get_run(run_id).info.status == "FAILED"


def test_kind_is_added_to_old_experiments_but_never_overrides_a_users(cfg, tmp_path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    old = ensure_experiment("old", tmp_path)
    chosen = mlflow.create_experiment("chosen", tags={"mlflow.experimentKind": "finetuning"})
    assert ensure_experiment("old", tmp_path, "custom_model_development") == old
    ensure_experiment("chosen", tmp_path, "custom_model_development")
    client = mlflow.MlflowClient()
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "finetuning"


@pytest.mark.slow  # two MLflow runs: about 20 s; run_name itself is tested below
def test_runs_are_named_by_stage_task_model_and_dvc_experiment(cfg, monkeypatch) -> None:
    """...in experiments that the UI opens as model training (not as a GenAI app)."""
    monkeypatch.setenv("DVC_EXP_NAME", "lr-sweep-1")
    with stage_run(cfg, "finetune", "ner", extra_tags={"task": "ner"}) as tracker:
        run_id = tracker.run_id
    run = mlflow.get_run(run_id)
    assert run.info.run_name == "finetune ner · tiny_bert · lr-sweep-1"
    assert run.data.tags["dvc_exp_name"] == "lr-sweep-1"
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    monkeypatch.delenv("DVC_EXP_NAME")
    with stage_run(cfg, "validate", "data") as tracker:  # data stages: no model in the name
        run_id = tracker.run_id
    assert mlflow.get_run(run_id).info.run_name == "validate"


def test_hydra_overrides_name_a_cli_run() -> None:
    origin = {"hydra_overrides": "finetune.shared.lr=3e-5 model=minilm"}
    name = run_name("finetune", "ner", "minilm", origin)
    assert name == "finetune ner · minilm · finetune.shared.lr=3e-5 model=minilm"
    assert len(run_name("evaluate", "ner", "m", {"hydra_overrides": "x=" + "1" * 400})) == 250


def test_evaluation_lands_on_the_training_run_with_its_data(cfg, prepared_smoke: Path) -> None:
    """Test figures and the splits' lineage on the run that trained the model: one row holds
    config, validation and test metrics (what the compare view compares)."""
    with stage_run(cfg, "finetune", "ner", extra_tags={"task": "ner"}) as train:
        train.log_metrics({"val_f1": 0.5})
    with stage_run(cfg, "evaluate", "ner", extra_tags={"task": "ner"}) as evaluate:
        evaluate.log_datasets(prepared_smoke, "ner", ["test"])
        for _ in range(2):  # evaluating again does not duplicate the inputs
            assert evaluate.log_to_run(
                train.run_id,
                {"test_f1": 0.25, "test_n_examples": 7},
                tags={"evaluate_run_id": evaluate.run_id},
                splits=(prepared_smoke, "ner", ("train", "validation", "test")),
            )
        assert not evaluate.log_to_run("0" * 32, {"test_f1": 0.25})
    run = mlflow.get_run(train.run_id)
    assert run.data.metrics.pop("startup_s") > 0  # the training process's own
    assert run.data.metrics == {"val_f1": 0.5, "test_f1": 0.25, "test_n_examples": 7.0}
    assert run.data.tags["evaluate_run_id"] == evaluate.run_id
    files = json.loads((prepared_smoke / "manifest.json").read_text())["files"]
    inputs = {
        i.dataset.name: (i.dataset.digest, {t.key: t.value for t in i.tags})
        for i in run.inputs.dataset_inputs
    }
    assert len(run.inputs.dataset_inputs) == 3
    for split in ("train", "validation", "test"):
        digest, tags = inputs[f"ner/{split}"]
        assert tags["mlflow.data.context"] == split
        assert tags["sha256"] == files[f"ner/{split}.jsonl"]
        assert digest == files[f"ner/{split}.jsonl"][:12]
    profile = json.loads(run.inputs.dataset_inputs[0].dataset.profile)
    assert profile["num_rows"] > 0
    test_inputs = mlflow.get_run(evaluate.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in test_inputs] == ["ner/test"]


def test_null_params_are_not_logged(tmp_path: Path) -> None:
    """A null key means 'not set' (no cap, no path, the default): it is not a param."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    with mlflow.start_run(experiment_id=mlflow.create_experiment("params")) as run:
        Tracker(run.info.run_id).log_params(
            {"finetune": {"shared": {"lr": 2e-4}, "ner": {"head_lr": None, "epochs": 3}}}
        )
    params = mlflow.get_run(run.info.run_id).data.params
    assert params == {"finetune.shared.lr": "0.0002", "finetune.ner.epochs": "3"}


def test_hydra_overrides_come_from_an_initialised_hydra_run() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from emergent.tracking import hydra_overrides

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", ["seed=7", "task=ner"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        # `task=` picks the stage's task, not the experiment: it is left out of the run name
        assert hydra_overrides() == ["seed=7"]
    finally:
        HydraConfig.instance().cfg = None
    assert hydra_overrides() == []
