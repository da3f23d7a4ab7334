"""Entry points end to end: the Hydra CLI, DVC repro and `dvc exp run -S` in a temporary clone."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cmd

pytestmark = pytest.mark.integration


@pytest.mark.slow  # an ingest through the CLI: about 30 s on two shared cores
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


@pytest.mark.slow  # CLI processes: about 17 s on two shared cores
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


@pytest.mark.slow
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


def data_doc_overrides() -> list[list[str]]:
    """The `-S` overrides of every command in docs/data.md's "Your own files", in order."""
    text = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    section = text.split("\n## Your own files\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [c for c in (shlex.split(line, comments=True) for line in block.splitlines()) if c]
    overrides = []
    for command in commands:
        assert command[:3] == ["dvc", "exp", "run"], command
        assert set(command[3::2]) == {"-S"}, command
        overrides.append(command[4::2])
    return overrides


def conll2003(sentences: list[tuple[str, str]]) -> str:
    blocks = [
        f"{a} NNP B-NP B-PER\n{b} VBD B-VP O\nin IN B-PP O\nParis NNP B-NP B-LOC\n"
        for a, b in sentences
    ]
    return "-DOCSTART- -X- -X- O\n\n" + "\n".join(blocks)


def run_cli_in_process(
    argv: list[str],
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> tuple[int, str]:
    """`python -m emergent <argv>` (the same `main`: argument splitting, Hydra's override
    parser, config validation, error handling) without a new interpreter's start-up."""
    from hydra.core.global_hydra import GlobalHydra

    from emergent.__main__ import main

    monkeypatch.setenv("EMERGENT_ROOT", str(root))
    monkeypatch.setattr(sys, "argv", ["emergent", *argv])
    GlobalHydra.instance().clear()
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().err


@pytest.mark.slow  # ingests each documented file layout: over a minute
def test_data_doc_commands_run_on_small_files(
    project_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Every command of docs/data.md's "Your own files" gets through ingest and the quality gate
    (the Hydra CLI's `main`, on small stand-ins for the /data/... files)."""
    data = tmp_path / "data"
    data.mkdir()
    files = {
        "eng.train": conll2003([(f"Name{i}", "said") for i in range(40)] + [("Name0", "said")]),
        "eng.testa": conll2003([(f"Dev{i}", "went") for i in range(8)]),
        # A duplicate inside the test file and a sentence also in train: kept whole.
        "eng.testb": conll2003(
            [(f"Test{i}", "ran") for i in range(7)] + [("Test0", "ran")] + [("Name1", "said")]
        ),
        "train.tsv": "sentence\tlabel\n"
        + "".join(
            f"sentence number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(80)
        ),
        "dev.tsv": "sentence\tlabel\n"
        + "".join(
            f"dev sentence {i} is {'fine' if i % 2 else 'poor'}\t{i % 2}\n" for i in range(12)
        ),
    }
    for name, content in files.items():
        (data / name).write_text(content, encoding="utf-8")
    commands = data_doc_overrides()
    assert len(commands) == 3
    for number, overrides in enumerate(commands):
        local = [
            re.sub(r"/data/\S*?([^/]+)$", lambda m: str(data / m.group(1)), o) for o in overrides
        ]
        run_dir = tmp_path / f"run{number}"
        for stage in ("ingest", "validate"):
            code, err = run_cli_in_process(
                [stage, "experiment=smoke", f"hydra.run.dir={run_dir}", *local],
                project_copy,
                monkeypatch,
                capsys,
            )
            assert code == 0, f"{stage} {local}:\n{err[-3000:]}"
        manifest = json.loads((run_dir / "data/prepared/manifest.json").read_text())
        tasks = manifest["tasks"]
        if any(o.startswith("data.ner.test=") for o in local):
            assert tasks["ner"]["rows"]["test"] == 9  # the whole file
            assert tasks["ner"]["heldout_overlaps"]["test_duplicates_kept"] == 1
            assert tasks["ner"]["leaks_removed"]["train_overlapping_heldout"] == 1
        if any(o.startswith("data.sentiment.test=") for o in local):
            rows = tasks["sentiment"]["rows"]
            assert rows["test"] == 12 and rows["validation"] == 8
            expected = {"negative", "positive"} if "label_map={" in " ".join(local) else {"0", "1"}
            assert set(tasks["sentiment"]["labels"]["validation"]) == expected


@pytest.mark.parametrize(
    "override,message",
    [
        ("seed=abc", "error: seed: Input should be a valid integer"),
        ("data.ner.encoding=bogus", "error: data.ner.encoding: unknown encoding 'bogus'"),
    ],
)
def test_cli_wrong_typed_config_is_one_line(
    override: str,
    message: str,
    project_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    code, err = run_cli_in_process(["ingest", override], project_copy, monkeypatch, capsys)
    assert code == 1 and message in err and "Traceback" not in err, err
    assert not (project_copy / "outputs").exists() or not list(
        (project_copy / "outputs").rglob("manifest.json")
    )
