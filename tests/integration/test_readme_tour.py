"""The documented tour, command by command: each composes and validates the way it runs.

TOUR mirrors the commands of README.md and of the docs it links for using the pipeline
(docs/pipeline.md's command list and few-shot lab, docs/data.md's own-files examples,
docs/service.md, docs/team.md's tuning). It is an explicit list, not parsed from the docs, so
they can be rewritten for readers freely: when a documented command is added or changed,
change it here.

- `dvc exp run -S ...` / `dvc repro`: DVC's own Hydra composition (`compose_and_dump`, what
  `-S` runs) writes a params.yaml, which must validate (the misspelt-key and type checks) and
  carry the override;
- `python -m emergent ...`: the argument split the CLI does, then composition and validation
  in-process, and the command itself with Hydra's `--cfg job` (prints the job's config and
  runs nothing); one small ingest really runs;
- `dvc dag` / `dvc exp show` / `dvc metrics show` run, read-only, in a committed copy.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from emergent.__main__ import split_stage
from emergent.config import compose, finetune_config, load_params
from emergent.schema import validate_config
from emergent.stages import STAGES
from tests.conftest import ROOT, run_cmd

pytestmark = pytest.mark.integration

# The documented tour (commands that only open a UI or a server port are marked `not here`).
TOUR = [
    "dvc dag",
    "dvc repro",
    "dvc exp run -S data.sentiment.max_rows=500",
    "dvc exp run -S model=tiny_bert",
    "dvc exp show",
    "dvc exp run -S finetune.shared.freeze.layers=4 -S finetune.shared.weight_decay=0.1",
    "dvc exp run -S finetune.ner.lr=3e-5",
    "dvc exp run -S experiment=scratch",
    "dvc metrics show",
    "python -m emergent ingest data.ner.max_rows=200",
    "python -m emergent -m finetune task=sentiment finetune.sentiment.lr=3e-5,1e-4",
    "python -m emergent evaluate task=ner data.ner.test=/data/eng.testb",
    'python -m emergent predict task=ner "Barack Obama visited Paris"',
    'python -m emergent predict task=sentiment -- "-2 stars" "plot=thin"',
    "python -m emergent predict task=sentiment 'predict.text=\"rating = 5, -2 for length\"'",
    "python -m emergent predict task=sentiment predict.file=reviews.txt",
    "python -m emergent predict task=sentiment",  # echo "a wonderful film" | ...
    "python -m emergent promote task=sentiment",
    # bring your own data
    "dvc exp run -S data.ner.train=/data/conll2003/eng.train"
    " -S data.ner.validation=/data/conll2003/eng.testa -S data.ner.test=/data/conll2003/eng.testb"
    " -S 'data.ner.entity_types=[PER,ORG,LOC,MISC]'",
    "dvc exp run -S data.sentiment.train=/data/sst2/train.tsv"
    " -S data.sentiment.test=/data/sst2/dev.tsv"
    " -S data.sentiment.text_column=sentence -S data.sentiment.label_column=label"
    " -S data.sentiment.label_map=null -S data.sentiment.labels=null"
    " -S 'data.sentiment.skip_labels=[]'",
    "dvc exp run -S data.sentiment.train=/data/sst2/train.tsv"
    " -S data.sentiment.test=/data/sst2/dev.tsv"
    " -S data.sentiment.text_column=sentence -S data.sentiment.label_column=label"
    " -S '~data.sentiment.label_map' -S '+data.sentiment.label_map={0: negative, 1: positive}'"
    " -S 'data.sentiment.skip_labels=[]'",
    # the service
    "python -m emergent keys add --scope predict",
    "python -m emergent keys add --scope predict --scope admin",
    "python -m emergent keys list",
    "python -m emergent serve serve.port=8080 serve.source=registry serve.alias=champion",
    "python -m emergent monitor export",
    "python -m emergent monitor",
    # the few-shot lab
    "dvc repro fewshot",
    "python -m emergent fewshot experiment=fewshot_lm",
    "dvc exp run -S experiment=fewshot_full",
    # seeds and the team set-up (queued runs: tests/integration/test_team.py; the tuned preset
    # exists only after a search: tests/integration/test_tune.py composes it)
    "python -m emergent seeds task=ner",
    "python -m emergent tune task=sentiment",
    "python -m emergent versus task=sentiment"
    " 'versus.models=[models/sentiment, outputs/runs/smollm2/models/sentiment]'",
]
# Not here: `make ui`, `make serve`, `make loadtest`, `mlflow models serve` and `curl` open
# servers (tests/integration/test_serve_*.py and tests/browser/ cover them); `dvc plots show`
# writes HTML only (tests/integration/test_metrics_readable.py).

DOCS = sorted((ROOT / "docs").glob("*.md"))
DVC_RUNS = [c for c in TOUR if c.startswith(("dvc exp run", "dvc repro"))]
CLI_RUNS = [c for c in TOUR if c.startswith("python -m emergent")]
DVC_READS = [c for c in TOUR if c not in DVC_RUNS and c.startswith("dvc ")]


def dvc_overrides(command: str) -> list[str]:
    """The `-S` values of a `dvc exp run` command (none for `dvc repro`)."""
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words) if word == "-S"]


def jobs(argv: list[str]) -> tuple[str, list[list[str]]]:
    """The stage and the override list of each job a `python -m emergent` command runs
    (a `-m` sweep expands as Hydra's basic sweeper expands it)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    stage, rest, _ = split_stage(argv)
    assert stage in STAGES, argv
    overrides = [a for a in rest if not a.startswith("-")]
    if "-m" not in rest:
        return stage, [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return stage, [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_the_tour_list_covers_each_kind_of_command() -> None:
    """Every command of the list is checked by exactly one of the tests below."""
    assert sorted(DVC_RUNS + CLI_RUNS + DVC_READS) == sorted(TOUR)


def test_every_tour_command_is_still_documented() -> None:
    """The list follows the docs: a command rewritten or dropped there is named here, to be
    changed in TOUR too (commands continued over lines with `\\` read as one line)."""
    text = "".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *DOCS])
    docs = " ".join(re.sub(r"\\\n", " ", text).split())
    assert [c for c in TOUR if c not in docs] == []


@pytest.mark.parametrize("command", DVC_RUNS)
def test_dvc_runs_compose_and_validate(command: str, tmp_path: Path) -> None:
    """What `dvc exp run -S ...` does before it runs a stage: DVC's Hydra composition into
    params.yaml; the result validates and holds each override."""
    from dvc.utils.hydra import compose_and_dump

    overrides = dvc_overrides(command)
    params = tmp_path / "params.yaml"
    compose_and_dump(params, str(ROOT / "conf"), None, "config", str(ROOT), overrides)
    cfg = load_params(params)
    validate_config(cfg)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.is_delete() or key in ("model", "experiment"):
            continue
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        assert value == override.value(), override.input_line
    if command == "dvc exp run -S finetune.ner.lr=3e-5":
        assert finetune_config(cfg, "ner").lr == 3e-5
        assert finetune_config(cfg, "sentiment").lr == 2e-4  # only the NER branch changes
    if command == "dvc repro":
        assert params.read_text() == (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize("command", CLI_RUNS)
def test_cli_commands_compose_and_validate(command: str) -> None:
    argv = shlex.split(command)[3:]
    _, overrides = jobs(argv)
    for job in overrides:
        cfg = compose(job, ROOT / "conf")
        validate_config(cfg)
    if "-m" in argv:
        lrs = [finetune_config(compose(j, ROOT / "conf"), "sentiment").lr for j in overrides]
        assert sorted(lrs) == [3e-5, 1e-4]


def cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMERGENT_ROOT": str(ROOT), "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "emergent", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", [c for c in CLI_RUNS if "-m" not in shlex.split(c)[3:]])
def test_cli_commands_print_their_job_config(command: str, tmp_path: Path) -> None:
    """The command as typed, with Hydra's `--cfg job` before the stage: Hydra composes the
    job's config, prints it, and nothing runs (no run folder)."""
    argv = shlex.split(command)[3:]
    done = cli(["--cfg", "job", "--resolve", *argv], tmp_path)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    _, (overrides,) = jobs(argv)
    expected = OmegaConf.to_container(compose(overrides, ROOT / "conf"), resolve=True)
    assert printed == expected
    assert not (tmp_path / "outputs").exists()


def test_readme_per_task_lr_through_the_cli(tmp_path: Path) -> None:
    done = cli(
        ["finetune", "task=ner", "finetune.ner.lr=3e-5", "--cfg", "job", "-p", "finetune.ner"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# @package finetune.ner\n")
    assert yaml.safe_load(done.stdout)["lr"] == 3e-5


def test_hydra_help_and_info_through_the_cli(tmp_path: Path) -> None:
    help_ = cli(["ingest", "--help"], tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("python -m emergent ingest is powered by Hydra.")
    # every preset file of the group, the tuned ones `tune` wrote included, in Hydra's order
    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert {"fewshot_full", "ner_tuned", "scratch", "smoke"} <= set(presets)
    assert f"experiment: {', '.join(presets)}\n" in help_.stdout
    info = cli(["ingest", "--info", "defaults"], tmp_path)
    assert info.returncode == 0, info.stderr
    assert "| finetune/task/inherit       | finetune.ner " in info.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # a real ingest: about 20 s on two shared cores
def test_ingest_of_the_tour_runs_on_small_data(tmp_path: Path) -> None:
    """`python -m emergent ingest data.ner.max_rows=200`, on the smoke-sized data: it really
    runs and writes into its own run folder, capped at 200 NER sentences."""
    done = cli(
        ["ingest", "data.ner.max_rows=200", "experiment=smoke", "hydra.run.dir=outputs/run"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    prepared = tmp_path / "outputs" / "run" / "data" / "prepared"
    rows = sum(
        len((prepared / "ner" / f"{split}.jsonl").read_text().splitlines())
        for split in ("train", "validation", "test")
    )
    assert rows == 200
    assert (prepared / "manifest.json").is_file()


@pytest.mark.slow  # DVC in a copy of the project
@pytest.mark.parametrize("command", DVC_READS)
def test_dvc_read_commands_run(command: str, project_copy: Path) -> None:
    done = run_cmd(shlex.split(command), project_copy, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if command == "dvc dag":
        for stage in ("ingest", "pretrain", "finetune@ner", "evaluate@debate", "fewshot"):
            assert stage in done.stdout
