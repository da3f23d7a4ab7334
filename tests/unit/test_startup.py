"""Stage start-up: what a `python -m emergent.stages <stage>` process imports before its work,
and the start-up benchmark (`python -m emergent.bench startup`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emergent.bench import startup
from emergent.stages import STAGES
from tests.conftest import ROOT


def loaded_after(code: str, watch: tuple[str, ...]) -> list[str]:
    """Which of `watch` a fresh interpreter has loaded after running `code`."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport json, sys\n"
            f"print(json.dumps([m for m in {list(watch)!r} if m in sys.modules]))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def imported_by(module: str, watch: tuple[str, ...]) -> list[str]:
    """Which of `watch` a fresh interpreter has loaded after importing `module`."""
    return loaded_after(f"import {module}", watch)


# Stages that train nothing load neither torch nor Lightning when their module is imported
# (torch comes, where needed, with the model their work loads).
@pytest.mark.parametrize("stage", ["ingest", "validate", "monitor", "tokenizer", "evaluate"])
def test_light_stage_imports_no_torch(stage: str) -> None:
    assert imported_by(STAGES[stage], ("torch", "lightning", "torchmetrics")) == []


def test_export_imports_lightning_only_for_recovery() -> None:
    # torch is the export's own work; Lightning only its recovery fine-tune after pruning.
    assert imported_by(STAGES["export"], ("torch", "lightning")) == ["torch"]


def test_monitor_without_traffic_reports_without_scipy(tmp_path: Path) -> None:
    # The usual `dvc repro` has no traffic window: the stage writes "no traffic" and never
    # runs a drift test, so scipy.stats (about a second) stays unloaded.
    code = (
        "from emergent.config import Paths, load_params\n"
        "from emergent.monitoring.drift import report_html\n"
        "from emergent.schema import validate_config\n"
        "from emergent.stages.monitor import evaluate\n"
        "settings = validate_config(load_params())\n"
        "paths = Paths.for_dvc()\n"
        f"result = evaluate(settings, paths, {str(tmp_path / 'absent.jsonl')!r})\n"
        "assert result['status'] == 'no traffic', result\n"
        "assert 'no traffic' in report_html(result)\n"
    )
    assert loaded_after(code, ("scipy.stats", "scipy")) == []


def test_a_dvc_stage_run_names_its_origin_without_importing_hydra() -> None:
    # Only the Hydra CLI (`python -m emergent`) has overrides; a DVC stage never loads Hydra.
    code = (
        "from emergent.tracking import run_origin\nassert 'hydra_overrides' not in run_origin()\n"
    )
    assert loaded_after(code, ("hydra",)) == []


def test_dvc_stages_are_the_stage_commands_of_dvc_yaml(tmp_path: Path) -> None:
    stages = startup.dvc_stages(ROOT / "dvc.yaml")
    assert stages[:4] == ["ingest", "validate", "tokenizer", "pretrain"]
    assert {"finetune", "evaluate", "export", "monitor", "fewshot"} <= set(stages)
    assert len(stages) == len(set(stages)) and set(stages) <= set(STAGES)
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(
        "stages:\n  a:\n    cmd: python -m emergent.stages export --task ${key}\n"
        "  b:\n    cmd: python -m emergent.stages ingest\n  c:\n    cmd: make x\n"
    )
    assert startup.dvc_stages(dvc) == ["export", "ingest"]


def measure(stage: str, tmp_path: Path, **env: str) -> dict:
    """One child measurement of `stage`'s start-up (its JSON line), with DVC_ROOT (where a
    relative MLflow store would land) in `tmp_path`."""
    done = subprocess.run(
        [sys.executable, "-m", "emergent.bench.startup", stage],
        cwd=ROOT,
        env={**os.environ, "DVC_ROOT": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # ~20 s on a loaded 2-core machine: a fresh interpreter and MLflow store
def test_measured_start_up_opens_a_run_in_the_given_store(tmp_path: Path) -> None:
    """The child measurement of a light stage: every phase timed, nothing heavy imported,
    and its MLflow run lands in the throwaway store, not the project's."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = measure("monitor", tmp_path, MLFLOW_TRACKING_URI=uri)
    assert all(result[phase] > 0 for phase in startup.PHASES) and result["opens_mlflow_run"]
    assert result["cpu_s"] > 0
    assert not {"torch", "lightning"} & set(result["imported"])

    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("startup_bench")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.data.tags["dvc_stage"] for run in runs] == ["monitor"]
    assert runs[0].info.status == "FINISHED"


def test_a_stage_without_a_run_is_measured_without_mlflow(tmp_path: Path) -> None:
    result = measure("tokenizer", tmp_path)
    assert result["opens_mlflow_run"] is False and result["mlflow_run_s"] == 0.0
    assert result["stage_import_s"] > 0 and "mlflow" not in result["imported"]
    assert not list(tmp_path.iterdir())  # no store, no artifacts


def test_unknown_stage_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        startup.main(["--stages", "monitor,nosuch"])
    assert exit_info.value.code == 2
    assert "unknown stage 'nosuch'" in capsys.readouterr().err
