"""A distributed Optuna study over fine-tuning runs: storage, queue, workers, MLflow, preset.

How several workers share one study without running a trial twice or one too many: the worker
that creates the study (an atomic insert; the others get `DuplicatedStudyError` and load it)
queues exactly `tune.n_trials` WAITING trials, then publishes the study's MLflow parent run as a
study attribute. Every worker then claims WAITING trials one at a time (WAITING -> RUNNING is a
checked update: `SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite, see
`open_storage`) until the queue is empty or its `tune.timeout` has passed. The total is exactly
the number asked for, whatever the number of workers, and trial numbers are assigned once, by
the creator. The test split is never read: the objective is the best validation headline of the
trial's fine-tuning run.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from emergent.config import project_root
from emergent.errors import ConfigError, StageError
from emergent.hardware import device_count
from emergent.io import atomic_write_text
from emergent.schema import Settings, TuneConfig
from emergent.tasks import Task
from emergent.tuning.space import (
    Dimension,
    apply_overrides,
    finetune_overrides,
    nested,
    parse_space,
)
from emergent.tuning.trial_pruning import ValidationPruning

log = logging.getLogger(__name__)

# Fine-tune one trial: (config, output folder, extra callbacks, extra MLflow tags) -> the run's
# best validation headline (None when it logged none, or outside rank zero). The tune stage
# passes the finetune stage.
TrainFn = Callable[[DictConfig, Path, list[Callback], dict[str, str]], float | None]

READY_ATTR = "n_trials"  # set last by the creator: the queue is complete
PARENT_ATTR = "mlflow_parent_run_id"
JOIN_WAIT_S = 120.0
SQLITE_BUSY_TIMEOUT_S = 60


@dataclass(frozen=True)
class TrialResult:
    """What a worker prints per finished trial."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    seconds: float
    run_id: str | None


def storage_url(url: str, root: Path | None = None) -> str:
    """The storage URL, with a relative sqlite path anchored at the project root."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        url = prefix + str((root or project_root()) / url[len(prefix) :])
    return url


def redact(url: str) -> str:
    """The URL without its password (it goes into logs, MLflow tags and the preset)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: Optuna will say so
        return url


def open_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage for `url`; on SQLite every transaction takes the write lock up front.

    pysqlite opens a transaction only at the first write, so two processes can both read a trial
    as WAITING and both mark it RUNNING (Optuna's `FOR UPDATE` is a no-op there); `BEGIN
    IMMEDIATE` makes read-then-write atomic, and a busy timeout lets the other worker wait
    instead of failing with "database is locked". Creating the tables from two fresh workers at
    once can collide: retried.
    """
    from sqlalchemy import event
    from sqlalchemy.exc import SQLAlchemyError

    sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    )
    for attempt in range(attempts):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            break
        except SQLAlchemyError as err:
            if attempt == attempts - 1:
                raise StageError(f"tune.storage: cannot open {redact(url)}: {err}") from err
            time.sleep(0.5 * (attempt + 1))
    if sqlite:
        engine = storage.engine

        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        engine.dispose()  # connections opened before the listeners existed
    return storage


def direction(task: Task) -> Literal["maximize", "minimize"]:
    """Optuna's direction for the task's headline (`task.headline.mode`)."""
    return "maximize" if task.headline.mode == "max" else "minimize"


def join_study(
    storage: optuna.storages.RDBStorage,
    name: str,
    task: Task,
    n_trials: int,
    publish: Callable[[], dict[str, str]],
) -> tuple[optuna.Study, bool]:
    """Create the study and queue its trials, or load it when another worker made it first.

    `publish` runs once, in the creating worker, after the queue is full; its attributes (the
    MLflow parent run) are stored on the study before `n_trials`, which joiners wait for.
    """
    wanted = direction(task)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=wanted, load_if_exists=False
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        if study.direction.name.lower() != wanted:
            raise ConfigError(
                "tune.study_name",
                f"study {name!r} was created to {study.direction.name.lower()}, but "
                f"{task.name}'s headline {task.headline.metric} is to {wanted}",
            ) from None
        deadline = time.monotonic() + JOIN_WAIT_S
        while READY_ATTR not in study.user_attrs:
            if time.monotonic() > deadline:
                raise StageError(
                    f"study {name!r} exists but its creator never finished queueing trials; "
                    "delete it (optuna delete-study) or pick another tune.study_name"
                ) from None
            time.sleep(0.5)
        queued = int(study.user_attrs[READY_ATTR])
        if queued != n_trials:
            log.warning(
                "study %r was created with %d trials; tune.n_trials=%d is ignored",
                name,
                queued,
                n_trials,
            )
        return study, False
    try:
        for _ in range(n_trials):
            study.enqueue_trial({})
        for key, value in publish().items():
            study.set_user_attr(key, value)
    except BaseException:
        # A half-made study would keep joiners waiting and block the name: take it back.
        optuna.delete_study(study_name=name, storage=storage)
        raise
    study.set_user_attr(READY_ATTR, n_trials)
    return study, True


def claim(storage: optuna.storages.RDBStorage, study_id: int) -> tuple[int, int] | None:
    """Take one WAITING trial (WAITING -> RUNNING, checked by the storage): (trial id, number);
    None when the queue is empty."""
    waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
    for trial in waiting:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id, trial.number
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def build_sampler(tune: TuneConfig, number: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with `seed + trial number` (see conf/tune/default.yaml)."""
    spec = tune.sampler.model_dump(by_alias=True)  # `_target_` and its keyword arguments
    # `seed`: a keyword argument of most samplers, not all (a Hydra target's open section)
    if spec.get("seed") is not None:
        spec["seed"] = int(spec["seed"]) + number
    return instantiate(spec)


def build_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    if tune.pruner is None:
        return optuna.pruners.NopPruner()
    return instantiate(tune.pruner.model_dump(by_alias=True))


def format_trial(result: TrialResult, metric: str, total: int) -> str:
    """One line per finished trial: number, state, value, parameters, time."""
    value = "-" if result.value is None else f"{result.value:.4f}"
    params = " ".join(f"{k}={_short(v)}" for k, v in result.params.items())
    width = len(str(max(total - 1, 0)))
    return (
        f"trial {result.number:>{width}} of {total}  {result.state:<8}  val_{metric}={value}  "
        f"{params}  ({result.seconds:.1f} s)"
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_trial(
    cfg: DictConfig,
    task: Task,
    study: optuna.Study,
    trial_id: int,
    dims: list[Dimension],
    train: TrainFn,
    out_dir: Path,
    tags: Mapping[str, str],
) -> TrialResult:
    """Suggest, fine-tune with the pruning callback, tell the study the outcome."""
    trial = optuna.Trial(study, trial_id)
    pruning = ValidationPruning(trial, f"val_{task.headline.metric}")
    run_tags = {**tags, "optuna_trial": str(trial.number)}
    start = time.perf_counter()
    state, value, params = TrialState.FAIL, None, {}
    try:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = {dim.name: dim.suggest(trial) for dim in dims}
        trial_cfg = apply_overrides(cfg, task.name, finetune_overrides(dims, params))
        trial_cfg.trainer.enable_progress_bar = False
        best = train(trial_cfg, out_dir, [pruning], run_tags)
        if best is not None and math.isfinite(float(best)):
            state, value = TrialState.COMPLETE, float(best)
        else:
            log.warning(
                "trial %d logged no finite validation %s", trial.number, task.headline.metric
            )
    except optuna.TrialPruned as pruned:
        state, value = TrialState.PRUNED, pruning.last  # Optuna records the last report too
        log.info("trial %d: %s", trial.number, pruned)
    finally:
        seconds = time.perf_counter() - start
        trial.set_user_attr("seconds", round(seconds, 3))
        if pruning.run_id:
            trial.set_user_attr("mlflow_run_id", pruning.run_id)
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)  # a failing trial re-raises after this
    return TrialResult(trial.number, state.name, value, params, seconds, pruning.run_id)


def work(
    cfg: DictConfig,
    settings: Settings,
    task: Task,
    train: TrainFn,
    out_root: Path,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One worker: join (or create) the study, run queued trials until none are left or the
    timeout passes, write the preset from the best trial into `out_root` (and, with
    `tune.adopt`, over the committed one); returns the study's summary (`preset`, `adopted`:
    the paths written). `settings` is what the study reads; each trial's config is made from
    `cfg`, the composed config, as the fine-tuning stage takes it."""
    from emergent.tuning import mlflow_runs

    tune, trainer = settings.tune, settings.trainer
    devices = device_count(trainer.devices, trainer.accelerator)
    if devices > 1 or trainer.num_nodes > 1:
        raise ConfigError(
            "trainer.devices",
            "tune runs each trial in one process: start more tune workers instead of DDP",
        )
    dims = parse_space(tune.space, settings.finetune.task(task.name))
    n_trials = tune.n_trials
    name = tune.study_name or f"{task.name}-{settings.model.name}"
    url = storage_url(tune.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    storage = open_storage(url)
    pruner = build_pruner(tune)

    def publish() -> dict[str, str]:
        return {PARENT_ATTR: mlflow_runs.open_parent(cfg, settings, task, name, redact(url))}

    study, created = join_study(storage, name, task, n_trials, publish)
    parent = str(study.user_attrs.get(PARENT_ATTR) or "")
    echo(
        f"{'created' if created else 'joined'} study {name!r} ({redact(url)}): "
        f"{n_trials if created else study.user_attrs[READY_ATTR]} trials, "
        f"{direction(task)} val_{task.headline.metric} of {task.name}"
    )
    study_id = storage.get_study_id_from_name(name)
    tags = {"optuna_study": name, "tune_task": task.name}
    if parent:
        tags["mlflow.parentRunId"] = parent
    total = int(study.user_attrs[READY_ATTR])
    started = time.monotonic()
    timeout = tune.timeout
    ran = 0
    while timeout is None or time.monotonic() - started < timeout:
        claimed = claim(storage, study_id)
        if claimed is None:
            break
        trial_id, number = claimed
        # A study object per trial: the sampler is seeded by the trial's number.
        trial_study = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=build_sampler(tune, number),
            pruner=pruner,
        )
        out_dir = out_root / name / f"trial-{number:04d}"
        try:
            result = run_trial(cfg, task, trial_study, trial_id, dims, train, out_dir, tags)
        finally:
            if not tune.keep_models:
                shutil.rmtree(out_dir, ignore_errors=True)
        mlflow_runs.finish_trial(settings, result, task.name)
        echo(format_trial(result, task.headline.metric, total))
        ran += 1
    summary = study_summary(study, task, dims)
    # As configured (a relative SQLite path stays relative): the preset quoting it is committed.
    summary.update(study=name, storage=redact(tune.storage), worker_trials=ran)
    if summary["best"] is not None:
        text = preset_text(task, summary, dims, base_experiment(cfg, task.name))
        # The run's own copy always; the committed preset only when asked (`tune.adopt`): a
        # smoke study must not replace the preset of a real one.
        summary["preset"] = str(write_preset(out_root / f"{task.name}_tuned.yaml", text))
        if tune.adopt:
            summary["adopted"] = str(write_preset(adopt_path(tune, task.name), text))
    if parent:
        mlflow_runs.update_parent(settings, parent, summary)
    return summary


def study_summary(study: optuna.Study, task: Task, dims: list[Dimension]) -> dict[str, Any]:
    """Counts by state, the search's wall time so far, and the best complete trial."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    best = None
    if counts["complete"]:
        trial = study.best_trial
        best = {
            "number": trial.number,
            "value": trial.value,
            "params": dict(trial.params),
            "overrides": finetune_overrides(dims, trial.params),
            "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
        }
    return {
        "task": task.name,
        "metric": f"val_{task.headline.metric}",
        "direction": direction(task),
        "trials": len(trials),
        "counts": counts,
        "wall_seconds": wall,
        "best": best,
    }


def preset_path(task: str, root: Path | None = None) -> Path:
    return (root or project_root()) / "conf" / "experiment" / f"{task}_tuned.yaml"


def adopt_path(tune: TuneConfig, task: str) -> Path:
    """Where adopting the study's preset puts it: `tune.preset`, else the committed
    `conf/experiment/<task>_tuned.yaml` that `experiment=<task>_tuned` selects."""
    return Path(tune.preset) if tune.preset else preset_path(task)


def base_experiment(cfg: DictConfig, task: str) -> str | None:
    """The `experiment=` preset the study ran on (the tuned preset builds on it), if any."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if not HydraConfig.initialized():
        return None
    chosen = HydraConfig.get().runtime.choices.get("experiment")
    return None if chosen in (None, "null", f"{task}_tuned") else str(chosen)


def preset_text(
    task: Task, summary: Mapping[str, Any], dims: list[Dimension], base: str | None
) -> str:
    """The Hydra preset: `finetune.<task>.<key>` from the best trial, on top of `base`."""
    best = summary["best"]
    counts = summary["counts"]
    params = ", ".join(f"{d.name}={best['params'][d.name]!r}" for d in dims)
    lines = [
        "# @package _global_",
        f"# Written by `python -m emergent tune task={task.name}` from Optuna study "
        f"{summary['study']!r} ({summary['storage']}):",
        f"# best of {summary['trials']} trials ({counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['fail']} failed) is trial {best['number']}, "
        f"{summary['metric']} = {best['value']:.4f} ({summary['direction']}); "
        f"MLflow run {best['mlflow_run_id']}.",
        f"# Parameters: {params}.",
        f"# Use: python -m emergent finetune task={task.name} experiment={task.name}_tuned",
        f"#      dvc exp run -S experiment={task.name}_tuned",
    ]
    if base:
        lines += ["defaults:", f"  - {base}   # the experiment the study ran on", "  - _self_"]
    body = OmegaConf.to_yaml(OmegaConf.create({"finetune": {task.name: nested(best["overrides"])}}))
    return "\n".join(lines) + "\n" + body


def write_preset(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    log.debug("wrote %s", path)  # the command prints where the preset went
    return path
