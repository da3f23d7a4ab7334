"""One process of the concurrent-writer test (tests/integration/test_team.py).

It opens the tracking store the way a stage does (`prepare_sqlite`, `ensure_experiment`), says
it is ready, waits for the go file so that all writers hit the store at once, then logs
`count` metrics one call (one write transaction) each, and prints its run id and write time.

    python tests/metric_writer.py URI EXPERIMENT NAME COUNT BARRIER_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import mlflow

from emergent.tracking import ensure_experiment, prepare_sqlite


def main(uri: str, experiment: str, name: str, count: int, barrier: Path) -> None:
    prepare_sqlite(uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment(experiment, barrier / "mlartifacts")
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        (barrier / f"ready-{name}").touch()
        deadline = time.monotonic() + 600
        while not (barrier / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go file")
            time.sleep(0.05)
        start = time.perf_counter()
        for step in range(count):
            mlflow.log_metric("value", float(step), step=step)
        seconds = time.perf_counter() - start
    print(json.dumps({"name": name, "run_id": run.info.run_id, "seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]))
