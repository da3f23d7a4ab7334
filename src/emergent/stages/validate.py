"""Stage `validate`: Great Expectations quality gate over `data/prepared/`.

Writes the reports and metrics first, then fails (exit 1) on any failed expectation so that
nothing downstream runs on bad data.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from emergent.config import Paths, project_root
from emergent.data.layout import manifest_path, verify_prepared
from emergent.data.quality import build_checks, failures, format_failures, run_checks
from emergent.errors import StageError
from emergent.io import atomic_dir, sha256_file, write_json
from emergent.schema import Settings
from emergent.tasks import all_tasks
from emergent.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig, paths: Paths, *, settings: Settings) -> None:
    prepared = paths.inp(settings.data.prepared_dir)
    manifest = manifest_path(prepared)
    if not manifest.is_file():
        raise StageError(f"{manifest} not found: run the ingest stage first")
    verify_prepared(prepared)
    with stage_run(cfg, "validate", "data", data_sha256=sha256_file(manifest)) as tracker:
        tasks = all_tasks(cfg)
        checks = build_checks(prepared, settings.data, tasks)
        assets_dir = settings.paths.assets_dir
        assets = project_root() / assets_dir if assets_dir else None
        reports = paths.out("reports", "quality")
        with atomic_dir(reports) as tmp:
            summaries = run_checks(checks, tmp / "docs", assets)
            for dataset, rows in summaries.items():
                write_json(
                    tmp / f"{dataset}.json",
                    {
                        "dataset": dataset,
                        "success": all(r["success"] for r in rows),
                        "evaluated": len(rows),
                        "failed": sum(not r["success"] for r in rows),
                        "expectations": rows,
                    },
                )
        failed = failures(summaries)
        # Headline figures only (one `dvc metrics show` column each); the per-dataset counts
        # are in reports/quality/<dataset>.json.
        metrics = {
            "success": not failed,
            "evaluated": sum(len(rows) for rows in summaries.values()),
            "failed": len(failed),
        }
        write_json(paths.out("metrics", "quality.json"), metrics)
        tracker.log_metrics({**metrics, "success": int(not failed)})
        for dataset in summaries:
            tracker.log_artifact(reports / f"{dataset}.json", "quality")
        tracker.set_tags({"quality": "passed" if not failed else "failed"})
        if failed:
            raise StageError(format_failures(failed))
        log.info("quality gate passed: %d expectations", metrics["evaluated"])
