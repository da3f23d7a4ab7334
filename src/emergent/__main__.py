"""Hydra CLI: `python -m emergent [-m] <stage> [key=value ...]` (`-m`: multirun sweeps).

Composes `conf/` with the overrides and runs the same stage code DVC runs, but writes outputs to
a fresh Hydra run folder (`outputs/runs/...`) so DVC-tracked outputs are never touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

from emergent.cli import configure_logging, user_errors
from emergent.config import CONFIG_NAME, Paths, project_root
from emergent.stages import STAGES, run_stage

USAGE = f"""usage: python -m emergent [-m] <stage> [key=value ...]

stages: {", ".join(STAGES)}
examples:
  python -m emergent ingest data.sentiment.max_rows=500
  python -m emergent -m pretrain model=tiny_bert,minilm pretrain.max_steps=20
"""


def split_stage(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take the stage name (first bare word) out of argv; the rest goes to Hydra."""
    for index, arg in enumerate(argv):
        if not arg.startswith("-") and "=" not in arg:
            return arg, argv[:index] + argv[index + 1 :]
    return None, argv


def main() -> None:
    stage, rest = split_stage(sys.argv[1:])
    if stage is None or stage not in STAGES:
        if stage is not None:
            print(f"error: unknown stage {stage!r}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        sys.exit(2)

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(
        config_path=str(project_root() / "conf"), config_name=CONFIG_NAME, version_base=None
    )
    def _run(cfg: DictConfig) -> None:
        configure_logging()
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        OmegaConf.resolve(cfg)
        with user_errors():
            run_stage(stage, cfg, Paths.for_cli(cfg, output_dir), task=cfg.get("task"))
        print(f"outputs: {output_dir}")

    sys.argv = [sys.argv[0], *rest]
    _run()


if __name__ == "__main__":
    main()
