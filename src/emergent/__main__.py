"""Hydra CLI: `python -m emergent [-m] <stage> [key=value ...]` (`-m`: multirun sweeps).

Composes `conf/` with the overrides and runs the same stage code DVC runs, but writes outputs to
a fresh Hydra run folder (`outputs/runs/...`) so DVC-tracked outputs are never touched.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from emergent.cli import configure_logging, user_errors
from emergent.config import CONFIG_NAME, Paths, project_root
from emergent.stages import ARGV_STAGES, STAGES, run_stage

OVERRIDE = re.compile(r"^[+~]{0,2}\w[\w.@/-]*=")

USAGE = f"""usage: python -m emergent [-m] <stage> [key=value ...]

stages: {", ".join(STAGES)}
examples:
  python -m emergent ingest data.sentiment.max_rows=500
  python -m emergent predict task=ner "Barack Obama visited Paris"
  python -m emergent -m pretrain model=tiny_bert,minilm pretrain.max_steps=20
"""


def is_command_arg(stage: str | None, arg: str, bare: bool) -> bool:
    """A text for `predict`, or an own argument of an ARGV_STAGES command (not an override)."""
    if stage == "predict":
        return bare or " " in arg
    return stage in ARGV_STAGES and not OVERRIDE.match(arg)


def split_stage(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Take the stage name (first bare word) out of argv. For `predict`, further bare words
    are texts to predict; for ARGV_STAGES (`keys add --scope predict`) every argument that is
    not a `key=value` override is the command's own; everything else goes to Hydra.
    Returns (stage, hydra args, texts or command arguments)."""
    stage, rest, texts = None, [], []
    for arg in argv:
        bare = not arg.startswith("-") and "=" not in arg
        if bare and stage is None:
            stage = arg
        elif is_command_arg(stage, arg, bare):
            texts.append(arg)
        else:
            rest.append(arg)
    return stage, rest, texts


def main() -> None:
    stage, rest, texts = split_stage(sys.argv[1:])
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
        extra: dict[str, object] = {}
        if stage == "predict":
            extra = {"texts": texts}
        elif stage in ARGV_STAGES:
            extra = {"argv": texts}
        with user_errors():
            run_stage(stage, cfg, Paths.for_cli(cfg, output_dir), task=cfg.get("task"), **extra)
        if stage != "predict":
            print(f"outputs: {output_dir}", file=sys.stderr)

    sys.argv = [sys.argv[0], *rest]
    _run()


if __name__ == "__main__":
    main()
