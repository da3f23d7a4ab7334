"""Stage `ingest`: configured sources (and user feedback, `data.<task>.feedback`) ->
`data/prepared/` (splits, corpus, manifest)."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import manifest_path
from emergent.data.prepare import prepare_all
from emergent.io import sha256_file
from emergent.schema import Settings
from emergent.tasks import all_tasks
from emergent.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig, paths: Paths, *, settings: Settings) -> None:
    prepared = paths.out(settings.data.prepared_dir)
    with stage_run(cfg, "ingest", "data") as tracker:
        start = time.perf_counter()
        tasks = all_tasks(cfg)
        manifest = prepare_all(
            settings.data, tasks, settings.seed, prepared, base_dir=paths.input_dir
        )
        seconds = time.perf_counter() - start
        metrics = {"ingest_seconds": seconds}
        for task, stats in manifest["tasks"].items():
            for split, n in stats["rows"].items():
                metrics[f"{task}.{split}.rows"] = n
            metrics[f"{task}.leaks_removed"] = sum(stats["leaks_removed"].values())
            metrics[f"{task}.duplicates_removed"] = sum(stats["duplicates_removed"].values())
            metrics[f"{task}.heldout_overlaps_kept"] = sum(stats["heldout_overlaps"].values())
            metrics[f"{task}.empty_dropped"] = stats["empty_dropped"]
            if "feedback" in stats:  # data.<task>.feedback: what joined train, what was dropped
                metrics[f"{task}.feedback.train_joined"] = stats["feedback"]["train"]
                metrics[f"{task}.feedback.removed"] = sum(stats["feedback"]["removed"].values())
        for split, n in manifest["corpus"]["rows"].items():
            metrics[f"corpus.{split}.rows"] = n
        tracker.log_metrics(metrics)
        tracker.set_tags({"data_sha256": sha256_file(manifest_path(prepared))})
        tracker.log_artifact(manifest_path(prepared))
        log.info("prepared data in %s (%.1fs)", prepared, seconds)
