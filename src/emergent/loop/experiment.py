"""The challenger: a DVC experiment over the task's branch of the pipeline, in the workspace.

In the workspace rather than `--temp`: the feedback export is a DVC dep but not a git file,
and a `--temp` copy holds only what git tracks; the workspace also leaves the prepared data and
the export of the newest candidate where `monitor` and `promote` read them.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path

from emergent.errors import StageError

log = logging.getLogger(__name__)

TAIL_LINES = 20  # of the experiment's output, in the error when it fails


def command(base: Sequence[str], targets: Sequence[str], task: str) -> list[str]:
    """The experiment command with its targets, `{task}` replaced by the loop's task."""
    return [*base, *(t.replace("{task}", task) for t in targets)]


def run(args: Sequence[str], cwd: Path, timeout_s: float) -> str:
    """Run the experiment; a failure or a timeout is a StageError with the output's tail."""
    log.info("challenger: %s (in %s)", " ".join(args), cwd)
    try:
        done = subprocess.run(
            list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError as err:
        raise StageError(f"loop.experiment.command: {args[0]!r} not found ({err})") from err
    except subprocess.TimeoutExpired as err:
        raise StageError(
            f"the challenger's experiment ran past loop.experiment.timeout_s={timeout_s}"
        ) from err
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-TAIL_LINES:])
        raise StageError(
            f"the challenger's experiment failed (exit {done.returncode}): {' '.join(args)}\n{tail}"
        )
    return output
