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
from emergent.schema import validate_config
from emergent.stages import ARGV_STAGES, STAGES, run_stage

USAGE = f"""usage: python -m emergent [-m] <stage> [key=value ...] [-- text ...]

stages: {", ".join(STAGES)}
examples:
  python -m emergent ingest data.sentiment.max_rows=500
  python -m emergent predict task=ner "Barack Obama visited Paris"
  python -m emergent predict task=sentiment -- "-5 stars" "rating=awful"
  python -m emergent -m pretrain model=tiny_bert,minilm pretrain.max_steps=20
"""

# A Hydra override: `key=value`, `+key=value`, `++key=value` or `~key[=value]`, where the key
# is a dotted config path (group@package and group/option allowed). Anything else after the
# stage is a text for `predict` ("x = 1" is a text: its key part has a space).
_OVERRIDE = re.compile(r"^(?:\+\+|\+|~)?[A-Za-z_][\w.@/\-]*=|^~[A-Za-z_][\w.@/\-]*$")


def split_stage(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Take the stage name (first bare word) out of argv; returns (stage, hydra args, texts).

    Flags (`-m`, ...) and `key=value` overrides go to Hydra; any other word after the stage is
    a text (for `predict`) or, for ARGV_STAGES (`keys add --scope predict`), the command's own
    argument. `--` ends the overrides: every argument after it is a text, so a text may start
    with `-` or look like `key=value`."""
    stage: str | None = None
    rest: list[str] = []
    texts: list[str] = []
    only_texts = False
    for arg in argv:
        if only_texts:
            texts.append(arg)
        elif arg == "--":
            only_texts = True
        elif _OVERRIDE.match(arg):
            rest.append(arg)
        elif stage in ARGV_STAGES:
            texts.append(arg)  # the command's own arguments, flags included
        elif arg.startswith("-"):
            rest.append(arg)
        elif stage is None:
            stage = arg
        else:
            texts.append(arg)
    return stage, rest, texts


def main() -> None:
    stage, rest, texts = split_stage(sys.argv[1:])
    if stage is None or stage not in STAGES:
        if stage is not None:
            print(f"error: unknown stage {stage!r}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    if texts and stage != "predict" and stage not in ARGV_STAGES:
        print(
            f"error: {stage} takes key=value overrides, not {texts[0]!r} "
            "(quote a value with spaces inside the override: 'key=a b')",
            file=sys.stderr,
        )
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
            validate_config(cfg)
            run_stage(stage, cfg, Paths.for_cli(cfg, output_dir), task=cfg.get("task"), **extra)
        if stage != "predict":
            print(f"outputs: {output_dir}", file=sys.stderr)

    sys.argv = [sys.argv[0], *rest]
    _run()


if __name__ == "__main__":
    main()
