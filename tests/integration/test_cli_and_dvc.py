"""Entry points end to end: the Hydra CLI, DVC repro and `dvc exp run -S` in a temporary clone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cmd

pytestmark = pytest.mark.integration


def test_cli_ingest_with_user_files_writes_to_a_hydra_run_dir(project_copy: Path) -> None:
    ner = project_copy / "user" / "eng.train"
    ner.parent.mkdir()
    blocks = [f"Tok{i} NNP B-NP B-PER\nsaid VBD B-VP O\n" for i in range(60)]
    ner.write_text("-DOCSTART- -X- -X- O\n\n" + "\n".join(blocks), encoding="utf-8")
    sst = project_copy / "user" / "sst.tsv"
    rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(80)]
    sst.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    result = run_cmd(
        [
            sys.executable,
            "-m",
            "emergent",
            "ingest",
            "experiment=smoke",
            f"data.ner.train={ner}",
            "data.ner.entity_types=[PER]",
            f"data.sentiment.train={sst}",
            "data.sentiment.text_column=sentence",
            "data.sentiment.label_column=label",
            "data.sentiment.label_map=null",
            "data.sentiment.skip_labels=[]",
        ],
        cwd=project_copy,
    )
    assert result.returncode == 0, result.stderr
    assert not (project_copy / "data" / "prepared").exists(), "CLI must not touch DVC outputs"
    run_dirs = list((project_copy / "outputs" / "runs").glob("*/*"))
    assert len(run_dirs) == 1
    manifest = json.loads((run_dirs[0] / "data/prepared/manifest.json").read_text())
    assert sum(manifest["tasks"]["ner"]["rows"].values()) == 60
    assert manifest["tasks"]["sentiment"]["labels"]["train"].keys() == {"0", "1"}


def test_cli_bad_input_is_one_clear_line(project_copy: Path) -> None:
    bad = project_copy / "bad.conll"
    bad.write_text("Hello\tO\nworld\n", encoding="utf-8")
    result = run_cmd(
        [sys.executable, "-m", "emergent", "ingest", "experiment=smoke", f"data.ner.train={bad}"],
        cwd=project_copy,
    )
    assert result.returncode == 1
    assert f"error: {bad}:2: expected a token and a tag" in result.stderr
    assert "Traceback" not in result.stderr


def test_dvc_repro_then_exp_run_with_hydra_overrides(project_copy: Path) -> None:
    smoke = ["-S", "experiment=smoke"]
    result = run_cmd(["dvc", "exp", "run", *smoke, "validate"], cwd=project_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project_copy / "metrics" / "quality.json").is_file()
    assert json.loads((project_copy / "metrics" / "quality.json").read_text())["failed"] == 0

    again = run_cmd(["dvc", "repro", "validate"], cwd=project_copy)
    assert again.returncode == 0 and "didn't change" in again.stdout, again.stdout

    result = run_cmd(
        [
            "dvc",
            "exp",
            "run",
            *smoke,
            "-S",
            "data.sentiment.max_rows=120",
            "-S",
            "model=minilm",
            "ingest",
        ],
        cwd=project_copy,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    assert params["data"]["sentiment"]["max_rows"] == 120
    assert params["model"]["name"] == "minilm"
    manifest = json.loads((project_copy / "data/prepared/manifest.json").read_text())
    assert sum(manifest["tasks"]["sentiment"]["rows"].values()) == 120
    shown = run_cmd(["dvc", "exp", "show", "--json"], cwd=project_copy)
    assert shown.returncode == 0 and "max_rows" in shown.stdout
