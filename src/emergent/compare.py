"""`make compare` / `python -m emergent.compare [dvc exp show options]`: experiments side by side.

`dvc exp show` prints every param and every metric: hundreds of columns, unreadable in a
terminal. This prints one row per experiment (the workspace, each baseline commit and the
experiments derived from it), each task's headline figure with its bootstrap interval from
`metrics/<task>.json` (`f1 0.412 [0.381, 0.447]`), and the params whose values differ between
the rows shown, within the terminal's width (at most 160 columns).

Options after the command go to `dvc exp show` itself, e.g. `-A` (all commits), `--rev main`,
`-n 3`; `make compare ARGS="-A"`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_WIDTH = 160
NAME_WIDTH = 22
MISSING = "-"
SEPARATOR = "  "


@dataclass
class Row:
    """One experiment: its name, its metrics files and its params (params.yaml), flattened."""

    name: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    status: str = ""


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _files(section: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """`{"metrics/ner.json": {"data": {...}}}` -> `{"metrics/ner.json": {...}}` (errors dropped)."""
    return {
        path: entry["data"]
        for path, entry in (section or {}).items()
        if isinstance(entry, Mapping) and isinstance(entry.get("data"), Mapping)
    }


def _row(state: Mapping[str, Any], name: str) -> Row:
    data = state.get("data")
    if not isinstance(data, Mapping):
        return Row(name, status="failed" if state.get("error") else "queued")
    params = _files(data.get("params"))
    return Row(
        name,
        metrics=_files(data.get("metrics")),
        params=flatten(params.get("params.yaml", {})),
        status="failed" if state.get("error") else "",
    )


def rows_from_exp_show(entries: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Rows in `dvc exp show`'s order: each baseline (or the workspace), then its experiments.

    `entries` is `dvc exp show --json`: baselines with `rev`, `name`, `data` and
    `experiments`, a list of ranges whose `revs` are the experiments' own states."""
    rows: list[Row] = []
    for entry in entries:
        rev = str(entry.get("rev", ""))
        rows.append(_row(entry, entry.get("name") or (rev if rev == "workspace" else rev[:7])))
        for exp_range in entry.get("experiments") or []:
            for state in exp_range.get("revs") or []:
                label = state.get("name") or exp_range.get("name") or str(state.get("rev"))[:7]
                rows.append(_row(state, f"└ {label}"))
    return rows


def task_headlines(rows: list[Row]) -> dict[str, str]:
    """Task name -> its headline metric (params `tasks.<task>.headline.metric`), in the order
    params.yaml lists the tasks; tasks only some rows have are kept."""
    found: dict[str, str] = {}
    for row in rows:
        for key, value in row.params.items():
            parts = key.split(".")
            if len(parts) == 4 and parts[0] == "tasks" and parts[2:] == ["headline", "metric"]:
                found.setdefault(parts[1], str(value))
    return found


def headline_cell(metrics: Mapping[str, Any] | None, metric: str) -> str:
    """`0.412 [0.381, 0.447]`: the figure and its bootstrap interval (figure alone without one)."""
    if not metrics or not isinstance(metrics.get(metric), int | float):
        return MISSING
    low, high = metrics.get(f"{metric}_ci_low"), metrics.get(f"{metric}_ci_high")
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"{metrics[metric]:.3f} [{low:.3f}, {high:.3f}]"
    return f"{metrics[metric]:.3f}"


def changed_params(rows: list[Row]) -> list[str]:
    """Params whose values differ between the rows (rows without params do not count)."""
    with_params = [row.params for row in rows if row.params]
    keys = sorted({key for params in with_params for key in params})
    return [
        key
        for key in keys
        if len({json.dumps(p.get(key), sort_keys=True, default=str) for p in with_params}) > 1
    ]


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render(rows: list[Row], width: int = MAX_WIDTH) -> str:
    """The table as text, every line at most `width` characters."""
    width = min(width, MAX_WIDTH)
    tasks = task_headlines(rows)
    params = changed_params(rows)
    headers = ["experiment", *(f"{task} {metric}" for task, metric in tasks.items())]
    cells = [
        [
            row.name,
            *(headline_cell(row.metrics.get(f"metrics/{t}.json"), m) for t, m in tasks.items()),
        ]
        for row in rows
    ]
    widths = [
        min(NAME_WIDTH, max(len(r[0]) for r in [headers, *cells])),
        *(max(len(r[i]) for r in [headers, *cells]) for i in range(1, len(headers))),
    ]
    used = sum(widths) + len(SEPARATOR) * len(widths)
    rest = max(width - used, 0)

    def line(parts: list[str], tail: str) -> str:
        text = SEPARATOR.join(
            _fit(p, w).ljust(w) if i == 0 else p.rjust(w)
            for i, (p, w) in enumerate(zip(parts, widths, strict=True))
        )
        return _fit(f"{text}{SEPARATOR}{tail}".rstrip(), width)

    out = [line(headers, "params that differ" if params else "(no params differ)")]
    for row, parts in zip(rows, cells, strict=True):
        tail = row.status or " ".join(f"{k}={_value(row.params.get(k))}" for k in params)
        out.append(line(parts, _fit(tail, rest)))
    return "\n".join(out)


def exp_show(args: list[str]) -> list[dict[str, Any]]:
    """`dvc exp show --json ARGS`, parsed (the dvc next to this Python first)."""
    local = os.path.join(os.path.dirname(sys.executable), "dvc")
    dvc = local if os.path.exists(local) else shutil.which("dvc") or "dvc"
    done = subprocess.run([dvc, "exp", "show", "--json", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: dvc exp show failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def iter_lines(argv: list[str]) -> Iterator[str]:
    width = min(shutil.get_terminal_size((MAX_WIDTH, 24)).columns, MAX_WIDTH)
    yield from render(rows_from_exp_show(exp_show(argv)), width).splitlines()


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    for text in iter_lines(argv):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
