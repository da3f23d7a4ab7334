"""The import-layer contracts in pyproject.toml hold (import-linter)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from scripts.dvc_deps import SRC, closure, module_graph

from tests.conftest import ROOT


def test_import_contracts_are_kept() -> None:
    """Every contract pyproject.toml declares is checked, and none is broken."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = len(pyproject["tool"]["importlinter"]["contracts"])
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"{declared} kept, 0 broken" in result.stdout


def test_no_task_name_tests_outside_the_task_package() -> None:
    import re

    pattern = re.compile(
        r"""==\s*["'](ner|sentiment|debate)["']|["'](ner|sentiment|debate)["']\s*=="""
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "src/emergent").rglob("*.py")
        if "tasks" not in path.relative_to(ROOT / "src/emergent").parts[:1]
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of `graph` (empty when there is none)."""
    from graphlib import CycleError, TopologicalSorter

    try:
        TopologicalSorter(graph).prepare()
    except CycleError as err:
        return list(err.args[1])
    return []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert sorted(set(cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))) == ["a", "b", "c"]


def test_no_import_circle_between_modules() -> None:
    """Static imports, lazy ones inside functions included (import-linter sees those too, but
    says so only per package)."""
    graph = module_graph()
    assert "emergent.tasks.metrics" in graph["emergent.tasks.token_classification"]
    assert cycle(graph) == []


def test_no_import_circle_between_packages() -> None:
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for module, imported in module_graph().items():
        graph.setdefault(package(module), set()).update(
            package(m) for m in imported if package(m) != package(module)
        )
    assert "emergent.data" in graph["emergent.tasks"]
    assert cycle(graph) == []


def files(paths: set[Path]) -> set[str]:
    return {str(p.relative_to(SRC.parent)) for p in paths}


def test_stages_without_a_task_do_not_import_the_task_package() -> None:
    """The pretraining stage's code does not change when how tasks rank errors does."""
    for stage in ("pretrain", "tokenizer"):
        needed = files(closure("emergent.stages.__main__") | closure(f"emergent.stages.{stage}"))
        assert "src/emergent/models/mlm.py" in needed or stage == "tokenizer"
        assert not [f for f in needed if f.startswith("src/emergent/tasks/")], stage
        assert "src/emergent/data/quality.py" not in needed


def test_the_monitor_stage_does_not_import_the_service() -> None:
    needed = files(closure("emergent.stages.monitor"))
    assert "src/emergent/monitoring/drift.py" in needed
    assert "src/emergent/serving/app.py" not in needed
    assert "src/emergent/serving/settings.py" not in needed
