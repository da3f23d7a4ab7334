"""Stage/command `monitor`: drift of logged traffic vs the test-set reference.

  python -m emergent monitor export    # request store -> monitor.window (JSONL, no raw text)
  python -m emergent monitor           # window vs reference -> reports/monitor/index.html,
                                       # metrics/monitor.json, MLflow experiment `monitoring`

No traffic yet (no window, or fewer than monitor.min_rows rows) is reported, not a failure.
Drift sets `drift: true`; with monitor.fail_on_drift=true the command also exits non-zero.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.errors import StageError
from emergent.schema import Settings

log = logging.getLogger(__name__)


def run(
    cfg: DictConfig, paths: Paths, argv: list[str] | None = None, *, settings: Settings
) -> None:
    from emergent.io import under

    conf = settings.monitor
    window = under(paths.input_dir, conf.window)
    if argv and argv[0] == "export":
        from emergent.serving.store import export_window

        db = under(paths.input_dir, settings.serve.store.path)
        n = export_window(db, window, conf.export_since_hours)
        print(f"wrote {n} records to {window}")
        return
    if argv:
        raise StageError(
            f"monitor: unknown argument {argv[0]!r} (use `monitor` or `monitor export`)"
        )
    results = evaluate(settings, paths, window)
    write(cfg, settings, paths, results)
    print(f"monitor: {results['status']}, drift={results['drift']}")
    if results["drift"] and conf.fail_on_drift:
        raise StageError(
            "drift above the configured threshold (monitor.drift_share); see "
            f"{paths.out('reports', 'monitor', 'index.html')}"
        )


def evaluate(settings: Settings, paths: Paths, window_path: Path) -> dict:
    from emergent.data.layout import load_task_split
    from emergent.monitoring.monitor import load_window, monitor, reference_features

    try:
        window = load_window(window_path)
    except ValueError as err:
        raise StageError(str(err)) from err
    limit = settings.monitor.reference_max_rows

    def reference(task: str) -> list[dict]:
        rows = load_task_split(paths.inp(settings.data.prepared_dir), task, "test")[:limit]
        return reference_features(paths.inp("models", "export", task), rows)

    refs = {t: functools.partial(reference, t) for t in settings.tasks.names()}
    return monitor(window, refs, settings.monitor)


def write(cfg: DictConfig, settings: Settings, paths: Paths, results: dict) -> None:
    from emergent.io import atomic_write_text, write_json
    from emergent.monitoring.drift import report_html
    from emergent.tracking import stage_run

    html_path = paths.out("reports", "monitor", "index.html")
    atomic_write_text(html_path, report_html(results))
    write_json(paths.out("reports", "monitor", "drift.json"), results)
    headline = {"status": results["status"], "drift": results["drift"]}
    for task, res in results["tasks"].items():
        headline[task] = {
            "rows": res["rows"],
            "drift": res.get("drift"),
            "drift_share": res.get("drift_share"),
        }
    write_json(paths.out("metrics", "monitor.json"), headline)
    with stage_run(cfg, "monitor", "monitoring", settings=settings) as tracker:
        import mlflow

        if tracker.run_id:
            for task, res in results["tasks"].items():
                mlflow.log_metric(f"{task}_rows", res["rows"])
                if res["status"] == "checked":
                    mlflow.log_metric(f"{task}_drift_share", res["drift_share"])
                    mlflow.log_metric(f"{task}_drift", float(res["drift"]))
            mlflow.log_artifact(str(html_path), "monitor")
