"""Command `promote`: the promotion gate decides whether `emergent-{task}@candidate` becomes
`@champion` (`emergent.registry.gate`: both versions' int8 packages scored on the test split
and the feedback test split, a paired bootstrap interval of the difference on each).

Prints one line per example set and the decision. Exit status: 0 when the candidate is the
champion afterwards (promoted, or it already was), 3 when the gate refused it, 1 on an error
(no candidate, no prepared test split, a package that does not load). The decision, both
versions, the data hashes and the intervals go to one MLflow run in the experiment `loop` and
to `promote.reports_dir/<UTC time>.json` (relative paths: under the project root).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.errors import GateRefused, StageError
from emergent.io import under
from emergent.registry.gate import GateRule, example_sets, run_gate
from emergent.registry.versions import alias_version, set_champion
from emergent.schema import Settings
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tracking import stage_run, tracking_uri

log = logging.getLogger(__name__)

EXPERIMENT = "loop"


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task, *, settings: Settings) -> None:
    mlflow.set_tracking_uri(tracking_uri(settings))
    candidate = alias_version(task.name, "candidate")
    if candidate is None:
        raise StageError(f"emergent-{task.name} has no candidate: run export@{task.name} first")
    champion = alias_version(task.name, "champion")
    sets = example_sets(paths.inp(settings.data.prepared_dir), task.name)
    rule = GateRule.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="emergent-promote-") as tmp:
        decision = run_gate(task, rule, candidate, champion, sets, Path(tmp))
    if decision.promoted:
        set_champion(task.name, candidate.version)
    record = decision.save(under(paths.input_dir, settings.promote.reports_dir))
    with stage_run(
        cfg,
        "promote",
        EXPERIMENT,
        data_sha256=sets[0].sha256,
        extra_tags={
            "task": task.name,
            "decision": decision.outcome,
            "candidate_version": candidate.version,
            "champion_version": champion.version if champion else "none",
            **{f"{s.name}_sha256": s.sha256 for s in sets},
        },
        settings=settings,
    ) as tracker:
        tracker.log_metrics(decision.metrics())
        tracker.log_artifact(record)
    for line in decision.lines():
        print(line)
    log.info("decision written to %s", record)
    if decision.outcome == "refused":
        raise GateRefused(f"promotion refused by the gate: {decision.reason}")
