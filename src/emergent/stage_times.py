"""`make times` / `python -m emergent.stage_times [--since ISO]`: where a pipeline run's time
went, one row per stage run, from the MLflow runs the stages logged.

A stage's wall time is more than its MLflow run: the process first imports torch,
transformers and Lightning and composes the config, and that start-up is paid once per DVC
stage (fifteen times in a `dvc repro`). `tracking.stage_run` therefore logs `startup_s` (the
seconds from the process's creation to the run's start) on every stage run, and this table
shows both parts side by side, sorted by start, with the share of each stage in the sum.
Runs from before `startup_s` existed show "-" for it.

By default the table holds the latest run of each (stage, task); `--since` keeps every
top-level stage run started at or after that time instead (e.g. the start of a `make repro`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from emergent.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

STAGE_TAG = "dvc_stage"
TASK_TAG = "task"
PARENT_TAG = "mlflow.parentRunId"
STARTUP_METRIC = "startup_s"
MISSING = "-"


@dataclass(frozen=True)
class StageTime:
    """One stage run: when it started, its start-up (None where not logged) and its run."""

    stage: str
    task: str
    start: datetime
    startup_s: float | None
    run_s: float

    @property
    def total_s(self) -> float:
        return self.run_s + (self.startup_s or 0.0)

    @property
    def name(self) -> str:
        return f"{self.stage}@{self.task}" if self.task else self.stage


def stage_times(uri: str, since: datetime | None = None) -> list[StageTime]:
    """Finished top-level stage runs of the tracking store at `uri`, oldest first: every one
    started at or after `since`, or (no `since`) the latest of each (stage, task)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    query = "attributes.status = 'FINISHED'"
    if since is not None:
        query += f" and attributes.start_time >= {int(since.timestamp() * 1000)}"
    rows: list[StageTime] = []
    for run in _all_runs(client, experiments, query):
        tags, info = run.data.tags, run.info
        if STAGE_TAG not in tags or PARENT_TAG in tags or info.end_time is None:
            continue
        rows.append(
            StageTime(
                stage=tags[STAGE_TAG],
                task=tags.get(TASK_TAG, ""),
                start=datetime.fromtimestamp(info.start_time / 1000, UTC),
                startup_s=run.data.metrics.get(STARTUP_METRIC),
                run_s=(info.end_time - info.start_time) / 1000,
            )
        )
    if since is None:
        latest: dict[tuple[str, str], StageTime] = {}
        for row in rows:
            key = (row.stage, row.task)
            if key not in latest or row.start > latest[key].start:
                latest[key] = row
        rows = list(latest.values())
    return sorted(rows, key=lambda r: r.start)


def _all_runs(client: MlflowClient, experiments: list[str], query: str) -> Iterator[Run]:
    """Every page of the search (MLflow returns at most `max_results` per call)."""
    token = None
    while True:
        page = client.search_runs(experiments, query, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def table(rows: list[StageTime]) -> str:
    """A plain-text table: each run's start-up, run and total seconds and share of the sum."""
    total = sum(r.total_s for r in rows) or 1.0
    width = max([len("stage"), *(len(r.name) for r in rows)])
    lines = [f"{'stage':<{width}}  started (UTC)        start-up     run   total  share"]
    for r in rows:
        startup = f"{r.startup_s:8.1f}" if r.startup_s is not None else f"{MISSING:>8}"
        lines.append(
            f"{r.name:<{width}}  {r.start:%Y-%m-%d %H:%M:%S}  {startup} {r.run_s:7.1f} "
            f"{r.total_s:7.1f}  {100 * r.total_s / total:4.1f}%"
        )
    startups = [r.startup_s for r in rows if r.startup_s is not None]
    lines.append(
        f"{'sum':<{width}}  {'':19}  {sum(startups):8.1f} {sum(r.run_s for r in rows):7.1f} "
        f"{sum(r.total_s for r in rows):7.1f}  ({len(rows)} runs, {len(startups)} with start-up)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emergent.stage_times",
        description="Per-stage wall time (start-up and run) from the MLflow stage runs.",
    )
    parser.add_argument(
        "--since",
        type=datetime.fromisoformat,
        default=None,
        help="every stage run started at or after this ISO time (default: latest per stage)",
    )
    parser.add_argument("--root", type=Path, default=None, help="project root (default: found)")
    args = parser.parse_args(argv)
    from emergent.config import load_params, project_root
    from emergent.tracking import tracking_uri

    try:
        root = args.root or project_root()
        uri = tracking_uri(load_params(root / "params.yaml"), root)
        since = args.since.replace(tzinfo=args.since.tzinfo or UTC) if args.since else None
        rows = stage_times(uri, since)
    except (UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"no finished stage runs in {uri}" + (f" since {since}" if since else ""))
        return 1
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
