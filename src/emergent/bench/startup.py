"""`python -m emergent.bench startup`: what each DVC stage process spends before its work.

Every `dvc repro` stage is a fresh `python -m emergent.stages <stage>` process, and before the
stage does anything it pays for: the entry point's imports (`emergent.stages.__main__`: cli,
config, schema), loading and checking params.yaml, importing the stage module (and whatever
that imports at module level: torch, Lightning, transformers, ...), and opening its MLflow
run (importing mlflow, the sqlite store, logging the resolved config; only for a stage whose
module calls `stage_run`). Each stage is measured
in a fresh interpreter, phase by phase, with the process's wall time from the parent and its
CPU time (user + system, which load from other processes on a shared machine inflates less
than wall time). Stages are interleaved round by round (`--repeats`) and medians reported, so
a burst of load lands on every stage alike. Which heavy packages the stage module loaded is
recorded too: a package there that the stage does not use is start-up to cut.

The MLflow phase runs against a throwaway sqlite store whose schema a first, unrecorded process
creates (as in a project whose `mlflow.db` already exists); nothing lands in the project's
store. Written to `reports/bench/startup.json` with the CPU model and flags.

This module imports only the standard library at the top: it is also the measured child
(`python -m emergent.bench.startup <stage>`), and its own imports must not pre-load anything.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Packages worth knowing a stage imports before its work (seconds each on a 2-core machine).
HEAVY = (
    "torch",
    "lightning",
    "torchmetrics",
    "transformers",
    "mlflow",
    "great_expectations",
    "pandas",
    "scipy",
    "sklearn",
    "matplotlib",
    "onnx",
    "onnxruntime",
)
PHASES = ("entry_s", "config_s", "stage_import_s", "mlflow_run_s")
_STAGE_CMD = re.compile(r"python -m emergent\.stages (\w+)")


def dvc_stages(dvc_yaml: Path) -> list[str]:
    """The stages `dvc repro` starts a process for, in dvc.yaml's order (from each `cmd`)."""
    names = _STAGE_CMD.findall(dvc_yaml.read_text(encoding="utf-8"))
    return list(dict.fromkeys(names))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(stage: str) -> dict[str, Any]:
    """The start-up phases of one stage, in this (fresh) process: what `emergent.stages`'s
    `main` does up to `run`, then opening and closing the stage's MLflow run."""
    times: dict[str, Any] = {}
    start = time.perf_counter()
    from emergent.stages.__main__ import STAGES  # the entry point's imports

    mark = time.perf_counter()
    times["entry_s"] = mark - start
    from emergent.config import load_params
    from emergent.schema import validate_config

    cfg = load_params()
    validate_config(cfg)
    times["config_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    module = importlib.import_module(STAGES[stage])
    times["stage_import_s"] = time.perf_counter() - mark
    times["imported"] = [name for name in HEAVY if name in sys.modules]
    # A stage that opens no run (the tokenizer) pays nothing for MLflow.
    times["opens_mlflow_run"] = "stage_run(" in Path(str(module.__file__)).read_text("utf-8")
    times["mlflow_run_s"] = 0.0
    if times["opens_mlflow_run"]:
        from emergent.tracking import stage_run

        mark = time.perf_counter()
        with stage_run(cfg, stage, "startup_bench"):
            pass
        times["mlflow_run_s"] = time.perf_counter() - mark
    times["cpu_s"] = _cpu_s()
    return times


def _child(stage: str, env: dict[str, str]) -> dict[str, Any]:
    """One fresh `python -m emergent.bench.startup <stage>`, timed from outside."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "emergent.bench.startup", stage],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"start-up of stage {stage} failed: {tail[0]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def run(stages: list[str], repeats: int) -> dict[str, Any]:
    """Each stage's start-up `repeats` times, interleaved; medians per phase."""
    samples: dict[str, list[dict[str, Any]]] = {stage: [] for stage in stages}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "DVC_ROOT": tmp,  # tracking's store root: artifacts go to the throwaway folder
        }
        _child(stages[0], env)  # creates the store's schema, and is not recorded
        for _ in range(repeats):
            for stage in stages:
                samples[stage].append(_child(stage, env))
    keys = ("process_wall_s", "cpu_s", *PHASES)
    report = {
        stage: {
            "median": {key: round(statistics.median(s[key] for s in runs), 3) for key in keys},
            "imported": runs[-1]["imported"],
            "samples": runs,
        }
        for stage, runs in samples.items()
    }
    return {
        "repeats": repeats,
        "cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "stages": report,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m emergent.bench startup [--repeats N] [--stages a,b]`."""
    from emergent.config import Paths, project_root
    from emergent.hardware import cpu_facts
    from emergent.io import write_json
    from emergent.stages import STAGES

    parser = argparse.ArgumentParser(
        prog="python -m emergent.bench startup", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--stages", default="", help="comma-separated stages (default: every stage in dvc.yaml)"
    )
    args = parser.parse_args(argv)
    stages = args.stages.split(",") if args.stages else dvc_stages(project_root() / "dvc.yaml")
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    result = run(stages, max(1, args.repeats))
    result["cpu"] = cpu_facts()  # figures from different machines stay apart
    out = Paths.for_dvc().out("reports", "bench", "startup.json")
    write_json(out, result)
    print(f"stage start-up, median of {result['repeats']} (seconds; {result['cores']} cores):")
    print(f"  {'stage':<10} {'process':>8} {'cpu':>6} " + " ".join(f"{p[:-2]:>12}" for p in PHASES))
    for stage, row in result["stages"].items():
        med = row["median"]
        cells = " ".join(f"{med[p]:12.2f}" for p in PHASES)
        print(f"  {stage:<10} {med['process_wall_s']:8.2f} {med['cpu_s']:6.2f} {cells}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1])))
