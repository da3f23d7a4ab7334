"""Shared command-line plumbing: logging setup and turning known errors into clean exits."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Nothing here may reach a hub; set before transformers/huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# transformers' bars ("Loading weights", "Writing model shards") time local file reads of a
# second; in a log they are a stray line each. Lightning's training bars stay.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # local copies, same


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("great_expectations", "alembic", "urllib3", "git", "matplotlib", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known failure kinds print one readable message and exit 1 (or their kind's
    `exit_code`: 3 for a candidate the promotion gate refused) instead of a traceback."""
    from emergent.errors import UserError

    try:
        yield
    except (UserError, FileNotFoundError) as err:
        print(f"{getattr(err, 'prefix', 'error: ')}{err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 1))
