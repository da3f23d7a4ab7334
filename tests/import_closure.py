"""Static import closure of a module inside `src/emergent` (for the DVC dependency test)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, package: str) -> set[str]:
    """Every `emergent...` module a file imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("emergent")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base.startswith("emergent"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def module_name(path: Path) -> str:
    """`src/emergent/tasks/__init__.py` -> `emergent.tasks`."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def direct_imports(path: Path) -> set[str]:
    """The `emergent` modules one file imports, at any depth (lazy imports included), each
    resolved to the module itself: `from emergent.tasks import metrics` is an import of
    `emergent.tasks.metrics`, `from emergent.tasks import Task` one of `emergent.tasks`
    (a package's `__init__` that runs before any of its modules is not counted)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if module_file(a.name) is not None}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if not base.startswith("emergent"):
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if module_file(child) is not None else base)
    return {m for m in found if module_file(m) is not None} - {name}


def module_graph() -> dict[str, set[str]]:
    """Every module of `src/emergent` and the `emergent` modules it imports."""
    return {
        module_name(path): direct_imports(path)
        for path in sorted(SRC.joinpath("emergent").rglob("*.py"))
    }


def closure(module: str) -> set[Path]:
    """Files of `module` and everything it imports inside `emergent`, transitively, plus the
    `__init__.py` of every package on the way (Python runs them on import)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts)):
            init = module_file(".".join(parts[:i]))
            if init is not None and init.name == "__init__.py" and init not in seen:
                todo.append(".".join(parts[:i]))
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += sorted(imported_modules(path, package))
    return seen


def config_targets(sections: list[str], params: dict) -> set[Path]:
    """Closure of the `emergent` classes that `_target_` names inside these params sections
    (dotted keys): Hydra imports them at run time, so no import statement shows them."""
    found: set[Path] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and target.startswith("emergent."):
                found.update(closure(target.rpartition(".")[0]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for section in sections:
        node: object = params
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        walk(node)
    return found


def stage_files(stage: str, key: str, stages: dict, params: dict) -> set[Path]:
    """What `python -m emergent.stages <stage>` runs: its import closure plus the `emergent`
    classes Hydra instantiates from its params sections (`stages`: dvc.yaml's `stages`;
    `key`: the task of a per-task stage)."""
    body = stages[stage].get("do", stages[stage])
    sections = [s.replace("${key}", key) for s in body.get("params", []) if isinstance(s, str)]
    return (
        closure("emergent.stages.__main__")
        | closure(f"emergent.stages.{stage}")
        | config_targets(sections, params)
    )


def stage_deps(stage: str, task: str | None = None) -> list[str]:
    """The source files of `stage` as dvc.yaml lists them."""
    import yaml

    root = SRC.parent
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    key = task or next(iter(params.get("tasks") or {}), "")
    return sorted(str(p.relative_to(root)) for p in stage_files(stage, key, stages, params))


if __name__ == "__main__":  # `python tests/import_closure.py <stage>`: the deps to paste
    import sys

    for path in stage_deps(sys.argv[1]):
        print(f"      - {path}")
