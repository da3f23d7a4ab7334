"""Hydra CLI: `python -m emergent [-m] <stage> [key=value ...]` (`-m`: multirun sweeps).

Composes `conf/` with the overrides and runs the same stage code DVC runs, but writes outputs to
a fresh Hydra run folder (`outputs/runs/...`) so DVC-tracked outputs are never touched.
"""

from __future__ import annotations

import itertools
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
Hydra's flags work after the stage: --cfg job|hydra|all [--resolve] [-p PACKAGE] (print the
config the stage would run with, and run nothing), --info [all|config|defaults|...], --help;
for `keys`, `monitor` and `feedback` put them before the command:
  python -m emergent --cfg job keys list
"""

# A Hydra override: `key=value`, `+key=value`, `++key=value` or `~key[=value]`, where the key
# is a dotted config path (group@package and group/option allowed). Anything else after the
# stage is a text for `predict` ("x = 1" is a text: its key part has a space).
_OVERRIDE = re.compile(r"^(?:\+\+|\+|~)?[A-Za-z_][\w.@/\-]*=|^~[A-Za-z_][\w.@/\-]*$")


# Hydra's own command-line flags (`hydra.main`'s parser; not public API, so named here and
# checked against Hydra's parser by tests/unit/test_cli_inputs.py on every Hydra upgrade):
# those that take a value (`--cfg job`), and `--info`, whose value is optional.
HYDRA_FLAGS_WITH_VALUE = frozenset(
    {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
    | {"--config-dir", "-cd", "--experimental-rerun"}
)
HYDRA_FLAGS_OPTIONAL_VALUE = {
    flag: frozenset({"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"})
    for flag in ("--info", "-i")
}


def split_stage(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Take the stage name (first bare word) out of argv; returns (stage, hydra args, texts).

    Flags (`-m`, `--cfg job`, `--info defaults`, ...) and `key=value` overrides go to Hydra;
    any other word after the stage is a text (for `predict`) or, for ARGV_STAGES (`keys add
    --scope predict`), the command's own argument. `--` ends the overrides: every argument
    after it is a text, so a text may start with `-` or look like `key=value`."""
    takes_value, optional = HYDRA_FLAGS_WITH_VALUE, HYDRA_FLAGS_OPTIONAL_VALUE
    stage: str | None = None
    rest: list[str] = []
    texts: list[str] = []
    only_texts = False
    args = iter(enumerate(argv))
    for i, arg in args:
        if only_texts:
            texts.append(arg)
        elif arg == "--":
            only_texts = True
        elif _OVERRIDE.match(arg):
            rest.append(arg)
        elif stage in ARGV_STAGES:
            texts.append(arg)  # the command's own arguments, flags included
        elif arg in takes_value or arg in optional:
            rest.append(arg)
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is not None and (arg in takes_value or following in optional[arg]):
                rest.append(following)  # the flag's value: `--cfg job`, `--info defaults`
                next(args)
        elif arg.startswith("-"):
            rest.append(arg)
        elif stage is None:
            stage = arg
        else:
            texts.append(arg)
    return stage, rest, texts


def planned_jobs(rest: list[str]) -> list[list[str]] | None:
    """The overrides of each job the command will run: one for a plain run, one per point of
    a `-m` sweep (as Hydra's basic sweeper expands it). None where a Hydra flag prints
    instead of running (`--cfg`, `--info`, `--help`) or a sweep the basic sweeper cannot
    expand: each job is then checked as it starts."""
    flags = [arg for arg in rest if arg.startswith("-")]
    overrides = [arg for arg in rest if not arg.startswith("-")]
    if any(flag not in ("-m", "--multirun") for flag in flags):
        return None
    if not flags:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None
    choices: list[list[str]] = []
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices.append([f"{key}={override.get_value_element_as_str()}"])
        elif override.is_discrete_sweep():  # `a=1,2`, `choice(...)`, `range(...)`
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            return None  # an interval sweep: only an optimising sweeper can expand it
    return [list(job) for job in itertools.product(*choices)]


def check_config(overrides: list[str]) -> None:
    """Compose and validate the config a single run would get, before Hydra makes a run
    folder: a misspelt key fails at once, in one line naming it."""
    from hydra.errors import HydraException

    from emergent.config import compose
    from emergent.errors import ConfigError
    from emergent.schema import unknown_override

    try:
        cfg = compose(overrides)
    except HydraException as err:
        one_line = " ".join(str(err).split(" Config search path")[0].split())
        raise (unknown_override(err, compose([])) or ConfigError("overrides", one_line)) from None
    validate_config(cfg)


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

    with user_errors():
        for overrides in planned_jobs(rest) or []:
            check_config(overrides)
    if "--help" in rest or "-h" in rest:
        rest.append(f"hydra.help.app_name='python -m emergent {stage}'")

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
            settings = validate_config(cfg)
            paths = Paths.for_cli(cfg, output_dir)
            run_stage(stage, cfg, paths, task=settings.task, settings=settings, **extra)
        if stage != "predict":
            print(f"outputs: {output_dir}", file=sys.stderr)

    sys.argv = [sys.argv[0], *rest]
    _run()


if __name__ == "__main__":
    main()
