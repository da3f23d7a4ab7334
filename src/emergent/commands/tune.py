"""Command `tune`: an Optuna search over `finetune.<task>` settings (config `conf/tune/`).

Each trial is a run of the finetune stage (same code, same MLflow run layout) in a folder under
the command's output directory, with Optuna's pruning callback added. Start the same command on
several machines with one `tune.storage` URL and they share the study. Prints one line per
finished trial and the study's summary, and writes the best trial's preset into the run folder
(`tune/<task>_tuned.yaml`) with the one command that adopts it. The committed
`conf/experiment/<task>_tuned.yaml` (the preset of a real study) is replaced only when asked:
`tune.adopt=true`; a smoke run, or any run not asked to, leaves `conf/` alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.errors import StageError
from emergent.schema import Settings, validate_config
from emergent.stages import finetune
from emergent.tasks import get_task
from emergent.tuning import adopt_path, work


def run(cfg: DictConfig, paths: Paths, *, settings: Settings) -> None:
    task = get_task(cfg, str(settings.task))
    # Before the study exists: a missing input would otherwise fail (and use up) its first trial.
    pretrained = paths.inp("models", "pretrained")
    if not (pretrained / "config.json").is_file():
        raise StageError(f"{pretrained} has no model: run the pretrain stage first")

    def train(
        trial_cfg: DictConfig, out_dir: Path, callbacks: list[Callback], tags: dict[str, str]
    ) -> float | None:
        trial_paths = Paths(paths.input_dir, out_dir)
        summary = finetune.run(
            trial_cfg,
            trial_paths,
            task,
            extra_callbacks=callbacks,
            extra_tags=tags,
            settings=validate_config(trial_cfg),
        )
        return summary.best_val if summary else None

    summary = work(cfg, settings, task, train, paths.out("tune"))
    best = summary["best"]
    counts = summary["counts"]
    print(
        f"study {summary['study']!r}: {summary['trials']} trials ({counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['fail']} failed, {counts['waiting']} waiting, "
        f"{counts['running']} running), {summary['wall_seconds']:.1f} s wall; "
        f"this worker ran {summary['worker_trials']}"
    )
    if best is None:
        print("no complete trial yet: no preset written")
        return
    value = f"{summary['metric']}={best['value']:.4f}"
    print(f"best: trial {best['number']} {value} {json.dumps(best['params'])}")
    use = f"python -m emergent finetune task={task.name} experiment={task.name}_tuned"
    if summary.get("adopted"):
        print(f"preset: {shown(summary['adopted'])} (adopted; use: {use})")
        return
    print(f"preset: {shown(summary['preset'])} (in the run folder; conf/ is unchanged)")
    target = shown(adopt_path(settings.tune, task.name))
    print(f"adopt it: cp {shown(summary['preset'])} {target}   (then: {use})")


def shown(path: str | Path) -> str:
    """`path` as typed from the current folder when it lies below it (the printed `cp`
    command is meant to be pasted), else absolute."""
    absolute = Path(path).resolve()
    return os.path.relpath(absolute) if absolute.is_relative_to(Path.cwd()) else str(absolute)
