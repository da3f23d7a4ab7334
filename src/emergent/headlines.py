"""`make headlines` / `python -m emergent.headlines [--check]`: the README's table of headline
figures, generated from `metrics/*.json`.

A figure typed by hand into the README goes stale the day the pipeline is re-run; this writes
the one table of headline figures between the marker comments `<!-- headlines:start -->` and
`<!-- headlines:end -->` of README.md from the metrics files `dvc repro` commits, so the README
never holds a figure of its own. `--check` writes nothing and exits 1 when the committed table
differs from the generated one (a test runs it). The measurements behind the figures (seed
means, ablations, timings) are in docs/results.md.

Each row degrades on its own: a missing file or key prints "not run" in that row, so a new
task, a new export or a few-shot file with more models never breaks the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from emergent.config import load_params, project_root
from emergent.errors import DataError, UserError
from emergent.io import atomic_write_text
from emergent.serving.package import Variant
from emergent.tasks import Task, all_tasks

START = "<!-- headlines:start -->"
END = "<!-- headlines:end -->"
NOT_RUN = "not run"
STALE = "the README's headline table is stale: run make headlines"
HEADER = ("| what | figure | from |", "| --- | --- | --- |")


def _number(data: Mapping[str, Any] | None, key: str) -> float | None:
    """`data[key]` as a float, or None where the file or the key is missing or not a number
    (booleans are not figures)."""
    if not isinstance(data, Mapping):
        return None
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_metrics(path: Path) -> dict[str, Any] | None:
    """A metrics file's object; None when it does not exist (that stage has not run). A file
    that exists but is not a JSON object is an error naming it: a half-written metrics file
    must not pass for 'not run'."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg})", line=err.lineno) from err
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object")
    return data


def _interval(low: float | None, high: float | None, digits: int) -> str:
    if low is None or high is None:
        return ""
    return f" (95% CI {low:.{digits}f} to {high:.{digits}f})"


def task_row(task: Task, metrics: Mapping[str, Any] | None) -> str:
    """`entity F1 0.514 (95% CI 0.426 to 0.597), 230 test examples`: the task's ONE headline
    metric on test, with the bootstrap interval the evaluate stage wrote beside it."""
    metric = task.headline.metric
    value = _number(metrics, metric)
    if value is None:
        return NOT_RUN
    low, high = _number(metrics, f"{metric}_ci_low"), _number(metrics, f"{metric}_ci_high")
    figure = f"{task.headline.label} {value:.3f}{_interval(low, high, 3)}"
    examples = _number(metrics, "n_examples")
    return figure if examples is None else f"{figure}, {examples:,.0f} test examples"


def _figures(*figures: tuple[float | None, str]) -> str:
    """The figures that exist, each formatted (`"{:.1f} MB"`), joined; NOT_RUN when none does."""
    present = [template.format(value) for value, template in figures if value is not None]
    return ", ".join(present) or NOT_RUN


def export_row(export: Mapping[str, Any] | None) -> str:
    """The shipped int8 package: size, throughput against fp32 PyTorch and the headline's drop
    on test in points, with its paired interval (validation decides; docs/results.md)."""
    int8 = export.get(Variant.INT8_ONNX) if isinstance(export, Mapping) else None
    low, high = _number(export, "int8_drop_ci_low"), _number(export, "int8_drop_ci_high")
    return _figures(
        (_number(int8, "size_mb"), "{:.1f} MB"),
        (
            _number(export, "int8_vs_torch_throughput"),
            "{:.2f}x the batch-32 throughput of fp32 PyTorch",
        ),
        (_number(export, "int8_drop"), "test drop {:.2f} points" + _interval(low, high, 2)),
    )


def pretrain_row(pretrain: Mapping[str, Any] | None) -> str:
    """Masked-token accuracy and perplexity on the corpus' validation text."""
    if isinstance(pretrain, Mapping) and pretrain.get("skipped") is True:
        return "skipped (pretrain.max_steps=0)"
    accuracy = _number(pretrain, "masked_accuracy")
    return _figures(
        (None if accuracy is None else 100 * accuracy, "masked accuracy {:.1f}%"),
        (_number(pretrain, "perplexity"), "perplexity {:.0f}"),
        (_number(pretrain, "global_step"), "{:,.0f} steps"),
    )


def best_fewshot(runs: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any]] | None:
    """The (method, k, figures) with the highest mean accuracy of one model (the first in file
    order on a tie), from `{method: {k: {mean, std, n_seeds, ...}}}`."""
    best: tuple[str, str, Mapping[str, Any]] | None = None
    for method, by_k in runs.items():
        if not isinstance(by_k, Mapping):
            continue
        for k, figures in by_k.items():
            mean = _number(figures, "mean")
            if mean is not None and (best is None or mean > float(best[2]["mean"])):
                best = (str(method), str(k), figures)
    return best


def fewshot_row(fewshot: Mapping[str, Any] | None) -> str:
    """The best few-shot accuracy per model, compactly; the whole grid, the majority-class
    baseline and the continuous metrics are in reports/fewshot/summary.md."""
    cells = []
    for model, runs in (fewshot or {}).items():
        found = best_fewshot(runs) if isinstance(runs, Mapping) else None
        if found is None:
            continue
        method, k, figures = found
        cell = f"{model} {float(figures['mean']):.3f}"
        std, seeds = _number(figures, "std"), _number(figures, "n_seeds")
        if std is not None and seeds is not None and seeds > 1:
            cell += f" ± {std:.3f} over {seeds:.0f} seeds"
        cells.append(f"{cell} ({method}, k={k})")
    if not cells:
        return NOT_RUN
    return "best accuracy: " + "; ".join(cells)


def _code(path: str) -> str:
    return f"`{path}`"


def rows(metrics_dir: Path, tasks: Iterable[Task], fewshot_task: str | None) -> list[str]:
    """The table's rows (markdown), tasks in configured order, each task's export after it."""
    out = []
    for task in tasks:
        name = task.card.title or task.name
        metrics_file, export_file = f"metrics/{task.name}.json", f"metrics/export_{task.name}.json"
        metrics = read_metrics(metrics_dir / f"{task.name}.json")
        export = read_metrics(metrics_dir / f"export_{task.name}.json")
        out.append(
            f"| {name} (`{task.name}`), test | {task_row(task, metrics)} | {_code(metrics_file)} |"
        )
        out.append(f"| {name}, int8 ONNX package | {export_row(export)} | {_code(export_file)} |")
    pretrain = read_metrics(metrics_dir / "pretrain.json")
    out.append(f"| MLM pretraining | {pretrain_row(pretrain)} | `metrics/pretrain.json` |")
    lab = f"Few-shot lab (`{fewshot_task}`)" if fewshot_task else "Few-shot lab"
    fewshot = read_metrics(metrics_dir / "fewshot.json")
    out.append(
        f"| {lab} | {fewshot_row(fewshot)} | `metrics/fewshot.json`, `reports/fewshot/summary.md` |"
    )
    return out


def table(metrics_dir: Path, tasks: Iterable[Task], fewshot_task: str | None = None) -> str:
    """The whole block between the markers, markers included."""
    body = [*HEADER, *rows(metrics_dir, tasks, fewshot_task)]
    return "\n".join([START, *body, END])


def replace_block(text: str, block: str, source: Path) -> str:
    """`text` with the marked block replaced by `block`; one start and one end marker, in that
    order, or an error naming the file."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise DataError(source, f"needs one '{START}' line and, after it, one '{END}' line")
    head, rest = text.split(START, 1)
    return head + block + rest.split(END, 1)[1]


def generate(root: Path) -> tuple[str, str]:
    """(the README as it is, the README with a freshly generated table) for project `root`,
    with the tasks of its committed params.yaml."""
    params, readme = root / "params.yaml", root / "README.md"
    if not params.is_file():
        raise DataError(params, "not found: run make params")
    if not readme.is_file():
        raise DataError(readme, "not found")
    cfg = load_params(params)
    fewshot_task = OmegaConf.select(cfg, "fewshot.task")
    block = table(root / "metrics", all_tasks(cfg), fewshot_task)
    text = readme.read_text(encoding="utf-8")
    return text, replace_block(text, block, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emergent.headlines",
        description="Write the README's headline table from metrics/*.json.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--root", type=Path, default=None, help="project root (default: found)")
    args = parser.parse_args(argv)
    try:
        root = args.root or project_root()
        current, fresh = generate(root)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if current != fresh:
            print(f"error: {STALE}", file=sys.stderr)
            return 1
        print("README.md headline table is current")
        return 0
    if current != fresh:
        atomic_write_text(root / "README.md", fresh)
        print("README.md: headline table rewritten from metrics/")
    else:
        print("README.md: headline table already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
