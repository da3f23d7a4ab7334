"""`make dvc-deps`: write each DVC stage's source deps in dvc.yaml from its import closure.

A stage re-runs when a file it imports changes, and only then: its deps list exactly the files
of `src/emergent` that `python -m emergent.stages <stage>` imports, transitively (lazy imports
inside functions included), plus the `emergent` classes Hydra instantiates from `_target_` in
the stage's params sections. Keeping ~300 paths current by hand failed on every new import, so
this script computes them (static `ast` walk, nothing imported) and rewrites only the
`src/emergent/...` entries of each stage's `deps`; every other line of dvc.yaml, its comments
included, stays as it is. The entries are written as one wrapped flow list per stage, the
hand-written deps (data, models) first, so dvc.yaml stays a few screens long.

Why not DVC templating (`vars: [deps.yaml]`, `deps: ${deps.finetune}`): DVC 3 validates a
stage's `deps` as a list before interpolating, and interpolates only scalars into it ("Cannot
interpolate data of type 'list'"), so a generated vars file cannot supply a list of deps.

    python scripts/dvc_deps.py           rewrite dvc.yaml (what `make dvc-deps` runs)
    python scripts/dvc_deps.py --check   exit 1 when dvc.yaml is stale (the test does this)

The closure functions are also what tests/unit/test_layers.py checks the import graph with.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# The stages whose deps this script owns: the ones dvc.yaml runs through the stage entry point.
STAGE_CMD = "python -m emergent.stages "
SOURCE_PREFIX = "src/emergent/"
WIDTH = 100


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


def task_keys(stage: dict, params: dict) -> list[str]:
    """The `${key}`s of a `foreach` stage (`foreach: ${tasks}`: the keys of params' `tasks`);
    `[""]` for a plain stage."""
    items = stage.get("foreach")
    if items is None:
        return [""]
    match = re.fullmatch(r"\$\{([\w.]+)\}", str(items).strip())
    node: object = params
    for part in (match.group(1) if match else "").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict | list):
        raise SystemExit(f"dvc.yaml: cannot resolve foreach {items!r} from params.yaml")
    return [str(k) for k in node]


def stage_sources(stage: str, stages: dict, params: dict) -> list[str]:
    """The source deps of `stage` (dvc.yaml's `stages`), relative to the project root: the
    union over its tasks, since one `foreach` body lists deps for all of them."""
    if not SRC.joinpath("emergent", "stages", f"{stage}.py").is_file():
        raise SystemExit(f"dvc.yaml: stage {stage!r} has no module src/emergent/stages/{stage}.py")
    files: set[Path] = set()
    for key in task_keys(stages[stage], params):
        files |= stage_files(stage, key, stages, params)
    return sorted(str(p.relative_to(ROOT)) for p in files)


def _flow_item(value: str) -> str:
    """A dep as a flow-sequence entry: plain where YAML allows it, else double-quoted
    (`${key}`'s braces would end a flow collection)."""
    return value if re.fullmatch(r"[\w./-]+", value) else json.dumps(value)


def flow_deps(indent: str, kept: list[str], sources: list[str]) -> list[str]:
    """`deps: [...]` wrapped at WIDTH: the kept deps on the key's line, the sources after."""
    lines = [f"{indent}deps: ["]
    cont = indent + "  "
    groups = [[_flow_item(d) for d in kept], sources]
    first = True
    for group in (g for g in groups if g):
        if not first:
            lines.append(cont)
        for item in group:
            line = lines[-1]
            bare = line.endswith(("[", " ")) or line == cont
            piece = item if bare else f" {item}"
            if not bare and len(line) + len(piece) + 2 > WIDTH:
                lines.append(cont + item)
            else:
                lines[-1] = line + piece
            lines[-1] += ","
        first = False
    lines[-1] = lines[-1].removesuffix(",") + "]"
    return lines


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The line after the value of the key on `lines[start]` (indented `indent`): lines
    indented deeper, block items at the key's own indent, and comments among them."""
    end = start + 1
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        if not stripped or (depth <= indent and not stripped.startswith(("- ", "#"))):
            break
        if depth < indent:
            break
        end += 1
    # Comments and blank lines that close the block belong to what follows.
    while end > start + 1 and lines[end - 1].strip().startswith("#"):
        end -= 1
    return end


def _comments(block: list[str], indent: str) -> list[str]:
    """The comments inside an old deps block, as lines to keep above `deps:` (a flow list
    holds none: put comments about a dep above the key)."""
    found = []
    for line in block:
        code, hashmark, comment = line.partition(" #")
        if line.strip().startswith("#"):
            found.append(f"{indent}{line.strip()}")
        elif hashmark and code.strip():
            found.append(f"{indent}# {code.strip().removeprefix('- ').strip()}:{comment}")
    return found


def render(text: str, params: dict) -> str:
    """dvc.yaml `text` with each entry-point stage's source deps rewritten (see the module
    docstring); everything else is returned as it was."""
    stages = yaml.safe_load(text)["stages"]
    lines = text.splitlines()
    out: list[str] = []
    stage_indent: int | None = None
    current: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        depth = len(line) - len(line.lstrip())
        key = re.match(r"^\s*([\w@.-]+):(\s|$)", line)
        if line.startswith("stages:"):
            stage_indent = None
            current = ""
        elif current is not None and key and depth == 0:
            current = None  # past the stages block
        elif current is not None and key and (stage_indent is None or depth == stage_indent):
            stage_indent = depth
            current = key.group(1)
        elif current and key and key.group(1) == "deps":
            body = stages[current].get("do", stages[current])
            if str(body.get("cmd", "")).startswith(STAGE_CMD):
                end = _block_end(lines, i, depth)
                block = lines[i:end]
                deps = yaml.safe_load("\n".join(x[depth:] for x in block))["deps"] or []
                kept = [d for d in deps if not str(d).startswith(SOURCE_PREFIX)]
                indent = " " * depth
                out += _comments(block[1:] if block[0].rstrip().endswith(":") else block, indent)
                out += flow_deps(indent, kept, stage_sources(current, stages, params))
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/dvc_deps.py", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is stale")
    args = parser.parse_args(argv)
    dvc_yaml = ROOT / "dvc.yaml"
    text = dvc_yaml.read_text(encoding="utf-8")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    new = render(text, params)
    if args.check:
        if new != text:
            print("dvc.yaml's source deps are stale: run `make dvc-deps`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        from emergent.io import atomic_write_text

        atomic_write_text(dvc_yaml, new)
        print(f"rewrote the source deps in {dvc_yaml}")
    else:
        print(f"{dvc_yaml}: source deps already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
