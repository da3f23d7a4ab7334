"""Command `loop`: one iteration of the continuous-training loop for one task.

  python -m emergent loop task=<t>        (make loop TASK=<t>)

1. the drift report of the task over the recent traffic window (`monitor export` + `monitor`)
   and the labelled examples stored since the champion's data (emergent.loop.trigger);
2. drift flagged, or at least `loop.min_new_examples` new examples, or `loop.force=true`:
   export the feedback, train a challenger with `dvc exp run` on the task's branch of the
   pipeline (export@task registers it as `candidate` with its lineage), run `promote` (the
   gate moves `champion` when the candidate passes), then ask the service at
   `loop.service_url` to reload with the admin key from `$<loop.admin_key_env>` and wait until
   `/v1/models` reports the new champion.

Exit status: 0 promoted (and the service serves it), 10 nothing to do (no trigger, or the
candidate already is the champion), 3 refused by the gate (champion and service unchanged),
1 an error (a second loop while one runs, a failed experiment, a service that did not reload:
then `champion` has moved and the report says the service still serves the old version).
Every iteration, whatever its end, writes `loop.reports_dir/<UTC time>.json` atomically.

Safe to kill anywhere: the lock is an flock the OS drops, the alias moves in one registry
call after the gate, the service swaps models whole; a rerun finds the same trigger (the
champion did not change) and trains again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig

from emergent.commands.feedback import export as export_feedback
from emergent.config import Paths
from emergent.errors import GateRefused, NothingToDo, StageError, UserError
from emergent.io import under, write_json
from emergent.loop import experiment, lock, service
from emergent.loop.trigger import Trigger, new_examples
from emergent.registry.versions import Version, alias_version
from emergent.schema import LoopConfig, Settings
from emergent.stages import run_stage
from emergent.stages.per_task import per_task
from emergent.tasks import Task
from emergent.tracking import tracking_uri

log = logging.getLogger(__name__)


@per_task
def run(cfg: DictConfig, paths: Paths, task: Task, *, settings: Settings) -> None:
    conf = settings.loop
    root = paths.input_dir
    with lock.hold(under(root, conf.lock_file)), _reported(conf, root, task.name) as report:
        mlflow.set_tracking_uri(tracking_uri(settings))
        admin_key = _admin_key(conf)  # before any training: a missing key fails at once
        champion = alias_version(task.name, "champion")
        report["champion_before"] = _version(champion)
        trigger = Trigger(
            drift=_drift(settings, paths, task.name, report),
            new_examples=_new_examples(settings, root, task.name, champion),
            min_new_examples=conf.min_new_examples,
            force=conf.force,
        )
        report.update(new_examples=trigger.new_examples, trigger=trigger.reason)
        print(f"loop {task.name}: {trigger.describe()}")
        if trigger.reason is None:
            raise NothingToDo(f"nothing to do: {trigger.describe()}")
        print(f"loop {task.name}: retraining: {trigger.reason}")
        export_feedback(settings, paths, task.name, task.example_fields)
        args = experiment.command(conf.experiment.command, conf.experiment.targets, task.name)
        report["experiment"] = " ".join(args)
        experiment.run(args, root, conf.experiment.timeout_s)
        report["candidate"] = _version(alias_version(task.name, "candidate"))
        decisions = under(root, settings.promote.reports_dir)
        before = set(decisions.glob("*.json"))
        try:
            run_stage("promote", cfg, paths, task=task.name, settings=settings)
        finally:  # refused or not, the report says which decision and which champion
            made = sorted(set(decisions.glob("*.json")) - before)
            report["decision_file"] = str(made[-1]) if made else None
            after = alias_version(task.name, "champion")
            report["champion_after"] = _version(after)
        if after is None or (champion is not None and after.version == champion.version):
            raise NothingToDo(
                f"nothing to do: candidate v{_version(after)} already is the champion"
            )
        _reload(conf, admin_key, task.name, after.version, report)


def _admin_key(conf: LoopConfig) -> str | None:
    if conf.service_url is None:
        return None
    key = os.environ.get(conf.admin_key_env, "")
    if not key:
        raise StageError(
            f"loop.admin_key_env: ${conf.admin_key_env} is empty; it must hold an `admin` API "
            f"key for {conf.service_url} (or set loop.service_url=null not to reload)"
        )
    return key


def _drift(settings: Settings, paths: Paths, task: str, report: dict[str, Any]) -> bool | None:
    """The monitor's drift verdict on the task's recent traffic (None: too little of it)."""
    import functools

    from emergent.data.layout import load_task_split
    from emergent.monitoring.monitor import load_window, monitor, reference_features
    from emergent.serving.store import export_window

    conf = settings.monitor
    db = under(paths.input_dir, settings.serve.store.path)
    if not db.is_file():
        report["drift"] = {"status": "no traffic", "rows": 0}
        return None
    window = under(paths.input_dir, conf.window)
    export_window(db, window, conf.export_since_hours)
    rows = load_task_split(paths.inp(settings.data.prepared_dir), task, "test")
    reference = functools.partial(
        reference_features,
        paths.inp("models", "export", task),
        rows[: conf.reference_max_rows],
    )
    found = monitor(load_window(window), {task: reference}, conf)["tasks"][task]
    report["drift"] = {k: found.get(k) for k in ("status", "rows", "drift", "drift_share")}
    return found.get("drift") if found["status"] == "checked" else None


def _new_examples(settings: Settings, root: Path, task: str, champion: Version | None) -> int:
    from emergent.serving.feedback import FeedbackStore, FeedbackStoreError

    store_cfg = settings.serve.store
    uri, db = store_cfg.feedback_uri, under(root, store_cfg.path)
    if not uri and not db.is_file():
        return 0
    try:
        with closing(FeedbackStore.open(uri, db)) as store:
            rows = [(r.id, r.sha256) for r in store.examples(task)]
    except FeedbackStoreError as err:
        raise StageError(str(err)) from err
    summary_path = under(root, settings.feedback.dir) / task / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return new_examples(rows, champion.tags if champion else None, summary)


def _reload(conf: LoopConfig, key: str | None, task: str, version: str, report: dict) -> None:
    if conf.service_url is None:
        report["service"] = "not reloaded (loop.service_url is null)"
        print(f"loop {task}: promoted v{version}; no service to reload (loop.service_url=null)")
        return
    report["service"] = f"champion moved to v{version}; reloading {conf.service_url}"
    before = service.reload_and_wait(
        conf.service_url,
        str(key),
        task,
        version,
        conf.reload_timeout_s,
        conf.poll_interval_s,
    )
    report["service"] = f"serves v{version} (was v{before})"
    print(f"loop {task}: promoted v{version}; {conf.service_url} serves it (was v{before})")


def _version(found: Version | None) -> str | None:
    return found.version if found else None


@contextmanager
def _reported(conf: LoopConfig, root: Path, task: str) -> Iterator[dict[str, Any]]:
    """The iteration's report, written atomically however the block ends, with its outcome
    and exit status."""
    start = datetime.now(UTC)
    clock = time.monotonic()
    report: dict[str, Any] = {"time": start.isoformat(), "task": task, "trigger": None}
    outcome, status = "promoted", 0
    try:
        yield report
    except GateRefused as err:
        outcome, status, report["error"] = "refused", err.exit_code, str(err)
        raise
    except NothingToDo as err:
        outcome, status, report["reason"] = "nothing to do", err.exit_code, str(err)
        raise
    except UserError as err:
        outcome, status, report["error"] = "error", err.exit_code, str(err)
        raise
    except BaseException as err:  # a bug or an interrupt: still say how far it went
        outcome, status, report["error"] = "error", 1, f"{type(err).__name__}: {err}"
        raise
    finally:
        report.update(outcome=outcome, exit_code=status, wall_s=time.monotonic() - clock)
        name = start.strftime("%Y-%m-%dT%H-%M-%S.%fZ") + ".json"
        path = under(root, conf.reports_dir) / name
        write_json(path, report)
        log.info("loop report written to %s", path)
