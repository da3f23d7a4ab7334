"""The DVC graph re-runs exactly what changed: source deps are each stage's import closure,
and a per-task parameter touches only that task's branch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cmd
from tests.import_closure import SRC, stage_files

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


def test_every_stage_depends_on_its_import_closure(project_copy: Path) -> None:
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    for name, stage in resolved_stages(project_copy).items():
        base, _, key = name.rpartition(":")[2].partition("@")  # "<dvc.yaml>:stage@key"
        needed = stage_files(base, key, raw, params)
        declared = set(stage["deps"])
        missing = sorted(
            str(p.relative_to(SRC.parent))
            for p in needed
            if not any(
                str(p.relative_to(SRC.parent)) == d
                or str(p.relative_to(SRC.parent)).startswith(d.rstrip("/") + "/")
                for d in declared
            )
        )
        assert not missing, f"dvc.yaml stage {name} lacks deps it imports: {missing}"


def test_a_task_param_reruns_only_that_task(project_copy: Path) -> None:
    """Record a lock over placeholder outputs, change `finetune.ner.lr`, ask `dvc status`."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    for stage in stages.values():
        items = stage.get("foreach")
        keys = list(params["tasks"]) if items else [None]
        body = stage.get("do", stage)
        for key in keys:
            outs = [*body.get("outs", []), *body.get("metrics", []), *body.get("plots", [])]
            inputs = [d.split()[0] for d in body.get("deps", []) if d.startswith(("data", "mod"))]
            for entry in [*inputs, *outs]:
                rel = next(iter(entry)) if isinstance(entry, dict) else entry
                path = project_copy / rel.replace("${key}", key or "")
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("step,value\n0,0\n" if path.suffix == ".csv" else "{}\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder.txt").write_text("x\n")
    committed = run_cmd(["dvc", "commit", "-f", "-q"], cwd=project_copy)
    assert committed.returncode == 0, committed.stdout + committed.stderr

    def changed() -> dict:
        """`dvc status`, without stages that run every time by design (monitor)."""
        result = run_cmd(["dvc", "status", "--json"], cwd=project_copy)
        status = json.loads(result.stdout or "{}")
        return {k: v for k, v in status.items() if v != ["always changed"]}

    assert changed() == {}

    params["finetune"]["ner"]["lr"] = 3.0e-5
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = changed()
    # NER's fine-tuning and its export (whose recovery fine-tune after pruning uses the same
    # settings); nothing of sentiment or debate.
    assert sorted(status) == ["export@ner", "finetune@ner"], status
