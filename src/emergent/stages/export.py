"""Stage `export@{task}`: pruning trade-off, fused ONNX fp32 + int8, parity gate, timing,
package, model registry (the work is in `emergent.export.pipeline`).

The package lands in `models/export/{task}/` (DVC forbids an output inside the fine-tuning
stage's `models/{task}/`).
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import feedback_seen, load_task_split, manifest_path
from emergent.errors import StageError
from emergent.export.pipeline import export_package, publish, require_encoder
from emergent.io import atomic_dir, sha256_file
from emergent.schema import Settings
from emergent.serving.package import Variant
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tracking import stage_run

log = logging.getLogger(__name__)


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task, *, settings: Settings) -> None:
    require_encoder(paths.inp("models", task.name))
    prepared = paths.inp(settings.data.prepared_dir)
    manifest = manifest_path(prepared)
    out_dir = paths.out("models", "export", task.name)
    with stage_run(
        cfg,
        "export",
        task.name,
        data_sha256=sha256_file(manifest) if manifest.is_file() else "",
        extra_tags={"task": task.name},
        settings=settings,
    ) as tracker:
        with atomic_dir(out_dir) as tmp:
            result, failures = export_package(cfg, settings, paths, task, tmp)
            tracker.log_metrics({k: v for k, v in result.items() if k not in ("curve", "headline")})
            if failures:  # raised inside atomic_dir: the previous package stays in place
                tracker.set_tags({"parity_gate": "failed"})
                raise StageError("parity gate failed: " + "; ".join(failures))
        tracker.set_tags({"parity_gate": "passed"})
        publish(paths, task, result)
        if tracker.enabled:
            from emergent.registry.versions import lineage, register

            examples = load_task_split(prepared, task.name, "test")[:2]
            texts = [task.text(e) for e in examples]
            origin = lineage(task.name, feedback_seen(manifest, task.name))
            register(task.name, out_dir, result[Variant.INT8_ONNX]["metric"], texts, origin)
    log.info("export %s: %s", task.name, json.dumps(result["ratios"]))
