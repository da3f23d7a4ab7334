"""The DVC graph re-runs exactly what changed: source deps are each stage's import closure
(written by `make dvc-deps`, scripts/dvc_deps.py), and a per-task parameter touches only that
task's branch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from scripts.dvc_deps import SRC, render, stage_files, stage_sources

from tests.conftest import ROOT, copy_project, git_env, run_cmd

pytestmark = pytest.mark.integration


def resolved_stages(project: Path) -> dict[str, dict]:
    """Stages as DVC resolves them (foreach expanded, params interpolated)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {
            stage.addressing: {
                "deps": [
                    str(Path(d.def_path)) for d in stage.deps if not d.def_path.endswith("yaml")
                ],
                "cmd": stage.cmd,
            }
            for stage in repo.index.stages
        }


@pytest.mark.slow  # DVC resolves the stages in a copy of the project: about 25 s
def test_every_stage_depends_on_exactly_its_import_closure(project_copy: Path) -> None:
    """As DVC resolves dvc.yaml (flow lists, `${key}` per task): each task's stage lists all
    it imports, and nothing that none of the stage's tasks imports."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    for name, stage in resolved_stages(project_copy).items():
        base, _, key = name.rpartition(":")[2].partition("@")  # "<dvc.yaml>:stage@key"
        needed = {str(p.relative_to(SRC.parent)) for p in stage_files(base, key, raw, params)}
        declared = {d for d in stage["deps"] if d.startswith("src/")}
        assert not sorted(needed - declared), f"{name} lacks deps it imports"
        # ... and no more: a file it does not import must not re-run it.
        assert not sorted(declared - set(stage_sources(base, raw, params))), (
            f"{name} lists deps it does not import"
        )


def current_files() -> tuple[str, dict]:
    return (ROOT / "dvc.yaml").read_text(encoding="utf-8"), yaml.safe_load(
        (ROOT / "params.yaml").read_text(encoding="utf-8")
    )


def test_dvc_yaml_source_deps_are_current() -> None:
    """The generated deps match the code: an import added or removed needs `make dvc-deps`."""
    text, params = current_files()
    assert render(text, params) == text, (
        "dvc.yaml's source deps differ from the stages' import closures: run `make dvc-deps`"
    )


def test_dvc_deps_rewrites_only_the_source_entries() -> None:
    """A stale dvc.yaml (stages missing a file they import, one listing a file it does not,
    one written by hand as a block list with a comment inside) comes back exactly as
    committed: comments, data deps, params and outs untouched, the comment moved above."""
    text, params = current_files()
    stale = text.replace(" src/emergent/models/crf.py,", "")
    stale = stale.replace(
        "src/emergent/cli.py,", "src/emergent/cli.py, src/emergent/serving/app.py,", 1
    )
    flow = re.search(r"  pretrain:\n    cmd: .*?\n(    deps: \[.*?\]\n)", text, re.DOTALL)
    assert flow is not None
    block = (
        "    deps:\n      # the corpus and its tokenizer\n      - data/prepared/corpus\n"
        "      - models/tokenizer\n      - src/emergent/io.py\n"
    )
    stale = stale.replace(flow.group(1), block)
    assert stale.count("crf.py") < text.count("crf.py") and "serving/app.py" in stale
    assert render(stale, params) == text.replace(
        flow.group(1), "    # the corpus and its tokenizer\n" + flow.group(1)
    )


def lock_over_placeholders(project: Path, params: dict) -> None:
    """A dvc.lock for `project` over placeholder outputs: `dvc commit -f` records the current
    hash of every dep (sources, params) without running a stage, so `dvc status` afterwards
    names exactly the stages whose deps an edit touched."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        items = stage.get("foreach")
        keys = list(params["tasks"]) if items else [None]
        body = stage.get("do", stage)
        for key in keys:
            outs = [*body.get("outs", []), *body.get("metrics", []), *body.get("plots", [])]
            inputs = [d.split()[0] for d in body.get("deps", []) if d.startswith(("data", "mod"))]
            for entry in [*inputs, *outs]:
                rel = next(iter(entry)) if isinstance(entry, dict) else entry
                path = project / rel.replace("${key}", key or "")
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("step,value\n0,0\n" if path.suffix == ".csv" else "{}\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder.txt").write_text("x\n")
    committed = run_cmd(["dvc", "commit", "-f", "-q"], cwd=project)
    assert committed.returncode == 0, committed.stdout + committed.stderr


def changed(project: Path) -> dict:
    """`dvc status`, without stages that run every time by design (monitor)."""
    result = run_cmd(["dvc", "status", "--json"], cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout or "{}")
    return {k: v for k, v in status.items() if v != ["always changed"]}


def edit_source(project: Path, rel: str) -> None:
    """A change Python sees (a new module-level name), as a developer's edit would be."""
    path = project / rel
    path.write_text(path.read_text(encoding="utf-8") + "\n_EDITED = True\n", encoding="utf-8")


@pytest.fixture(scope="module")
def locked_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project copy with a lock over placeholder outputs, shared by the tests below (the
    lock takes DVC a while); each test's edits are undone after it."""
    project = copy_project(tmp_path_factory.mktemp("locked") / "project")
    lock_over_placeholders(project, yaml.safe_load((project / "params.yaml").read_text()))
    return project


@pytest.fixture
def locked(locked_project: Path) -> Iterator[Path]:
    assert changed(locked_project) == {}
    yield locked_project
    subprocess.run(["git", "checkout", "--", "."], cwd=locked_project, env=git_env(), check=True)


@pytest.mark.slow  # DVC status over a locked copy of the project
def test_a_task_param_reruns_only_that_task(locked: Path) -> None:
    """Change `finetune.ner.lr` under a lock of the current code and params: `dvc status`."""
    params = yaml.safe_load((locked / "params.yaml").read_text())
    params["finetune"]["ner"]["lr"] = 3.0e-5
    (locked / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = changed(locked)
    # NER's fine-tuning and its export (whose recovery fine-tune after pruning uses the same
    # settings); nothing of sentiment or debate.
    assert sorted(status) == ["export@ner", "finetune@ner"], status


@pytest.mark.slow  # DVC status over a locked copy of the project
def test_a_shared_param_reruns_every_task(locked: Path) -> None:
    """`-S finetune.shared.batch_size=4` as DVC's Hydra composition writes it: the task sections
    that interpolate the key change with it (sentiment sets its own, 32, and keeps it), and every
    task's fine-tuning and export re-run; evaluation (which reads the trained model) does not."""
    from emergent.config import compose, params_text

    cfg = compose(["finetune.shared.batch_size=4"], locked / "conf")
    assert (cfg.finetune.ner.batch_size, cfg.finetune.sentiment.batch_size) == (4, 32)
    (locked / "params.yaml").write_text(params_text(cfg), encoding="utf-8")
    tasks = list(cfg.tasks)
    expected = sorted(f"{stage}@{t}" for stage in ("finetune", "export") for t in tasks)
    assert sorted(changed(locked)) == expected


@pytest.mark.slow  # DVC status over a locked copy of the project
def test_changing_how_mistakes_are_ranked_reruns_only_evaluation(locked: Path) -> None:
    """The error ranking once sat below every stage: editing it re-ran MLM pretraining."""
    tasks = yaml.safe_load((locked / "params.yaml").read_text())["tasks"]
    edit_source(locked, "src/emergent/evaluation/mistakes.py")
    assert sorted(changed(locked)) == sorted(f"evaluate@{t}" for t in tasks)


@pytest.mark.slow  # DVC status over a locked copy of the project
def test_a_serving_only_change_reruns_no_stage(locked: Path) -> None:
    """The service (and the settings the monitor stage once imported a path helper from) is
    no pipeline stage's code."""
    edit_source(locked, "src/emergent/serving/app.py")
    edit_source(locked, "src/emergent/serving/settings.py")
    assert changed(locked) == {}


@pytest.mark.slow  # DVC status over a locked copy of the project
def test_user_feedback_reruns_ingest(locked: Path) -> None:
    """`data/feedback/` is ingest's dependency (its committed README keeps the folder in
    place, as DVC refuses a missing dependency): new feedback makes ingest stale, and only
    ingest until what ingest writes changes."""
    folder = locked / "data" / "feedback" / "sentiment"
    folder.mkdir()
    try:
        (folder / "train.jsonl").write_text('{"text": "a fine film", "label": "positive"}\n')
        assert sorted(changed(locked)) == ["ingest"]
    finally:
        shutil.rmtree(folder)
    assert changed(locked) == {}
