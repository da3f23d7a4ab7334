"""DVC entry point: `python -m emergent.stages <stage> [--task T]`, configured by params.yaml."""

from __future__ import annotations

import argparse
import sys

from emergent.cli import configure_logging, user_errors
from emergent.config import Paths, load_params
from emergent.schema import validate_config
from emergent.stages import STAGES, run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emergent.stages", description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--task", default=None, help="task for per-task stages (ner, sentiment)")
    args = parser.parse_args(argv)
    configure_logging()
    with user_errors():
        cfg = load_params()
        settings = validate_config(cfg)
        run_stage(args.stage, cfg, Paths.for_dvc(), task=args.task, settings=settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
