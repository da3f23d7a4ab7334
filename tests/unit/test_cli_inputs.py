"""Command lines: argument splitting, up-front config validation, predict's input and output,
and one clear line (never a traceback) for each kind of bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from emergent.__main__ import split_stage
from emergent.commands import predict
from emergent.config import Paths, compose, params_text
from emergent.data.layout import verify_prepared
from emergent.errors import ConfigError, DataError, StageError
from emergent.io import read_jsonl
from emergent.schema import PredictConfig, validate_config
from tests.conftest import ROOT, smoke_cfg
from tests.unit.test_tasks import SENT

# --- argument splitting ------------------------------------------------------------------


def test_override_with_a_space_is_an_override_not_a_text() -> None:
    stage, rest, texts = split_stage(["predict", "task=ner", "predict.file=/a b.txt"])
    assert (stage, rest, texts) == ("predict", ["task=ner", "predict.file=/a b.txt"], [])


def test_texts_with_spaces_equals_and_dashes() -> None:
    stage, rest, texts = split_stage(
        ["-m", "predict", "task=ner", "Barack Obama", "x = 1 is fine", "--", "-5 stars", "a=b"]
    )
    assert stage == "predict"
    assert rest == ["-m", "task=ner"]
    assert texts == ["Barack Obama", "x = 1 is fine", "-5 stars", "a=b"]
    assert split_stage(["ingest", "~data.sentiment.label_share", "+x.y=1"])[1] == [
        "~data.sentiment.label_share",
        "+x.y=1",
    ]


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["ingest", "--cfg", "job"], ("ingest", ["--cfg", "job"], [])),
        (
            ["finetune", "task=ner", "--cfg", "all", "--resolve", "-p", "finetune.ner"],
            ("finetune", ["task=ner", "--cfg", "all", "--resolve", "-p", "finetune.ner"], []),
        ),
        (["ingest", "-c", "hydra"], ("ingest", ["-c", "hydra"], [])),
        (["ingest", "--info"], ("ingest", ["--info"], [])),
        (["ingest", "--info", "defaults"], ("ingest", ["--info", "defaults"], [])),
        # --info's value is optional: a word that is not one of its choices stays a text
        (["predict", "--info", "Paris"], ("predict", ["--info"], ["Paris"])),
        (["ingest", "--help"], ("ingest", ["--help"], [])),
    ],
)
def test_hydra_flags_and_their_values_go_to_hydra(argv: list[str], expected: tuple) -> None:
    assert split_stage(argv) == expected


def test_the_hydra_flag_tables_match_hydras_own_parser() -> None:
    """The CLI names Hydra's flags instead of importing Hydra's private parser; this canary
    reads that parser so a Hydra upgrade that adds or changes a flag fails here."""
    from hydra._internal.utils import get_args_parser

    from emergent.__main__ import HYDRA_FLAGS_OPTIONAL_VALUE, HYDRA_FLAGS_WITH_VALUE

    actions = get_args_parser()._actions
    with_value = {f for a in actions if a.nargs is None for f in a.option_strings}
    optional = {
        f: frozenset(a.choices) for a in actions if a.nargs == "?" for f in a.option_strings
    }
    assert with_value == HYDRA_FLAGS_WITH_VALUE
    assert optional == HYDRA_FLAGS_OPTIONAL_VALUE


def test_jobs_checked_up_front_are_those_hydra_will_run() -> None:
    from emergent.__main__ import planned_jobs

    assert planned_jobs(["task=ner", "seed=2"]) == [["task=ner", "seed=2"]]
    assert planned_jobs(["-m", "finetune.ner.lr=1e-4,3e-5", "task=ner"]) == [
        ["finetune.ner.lr=0.0001", "task=ner"],  # as Hydra writes each point
        ["finetune.ner.lr=3e-05", "task=ner"],
    ]
    assert planned_jobs(["--cfg", "job", "task=ner"]) is None  # prints, runs nothing
    assert planned_jobs(["-m", "seed=range(1,3)", "model=a,b"]) == [
        ["seed=1", "model=a"],
        ["seed=1", "model=b"],
        ["seed=2", "model=a"],
        ["seed=2", "model=b"],
    ]
    assert planned_jobs(["-m", "lr=interval(0.1,0.2)"]) is None  # no grid to check


def test_a_sweep_with_one_bad_point_fails_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from emergent.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMERGENT_ROOT", str(ROOT))
    monkeypatch.setattr("sys.argv", ["emergent", "-m", "finetune", "finetune.ner.lr=1e-4,-1"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert (
        capsys.readouterr().err
        == "error: finetune.ner.lr: Input should be greater than 0; got -1\n"
    )
    assert not (tmp_path / "outputs").exists()


# --- config validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("seed=abc", r"seed: Input should be a valid integer"),
        ("finetune.shared.lr=abc", r"finetune\.shared\.lr: Input should be a valid number"),
        ("finetune.ner.max_epochs=abc", r"finetune\.ner\.max_epochs: .*valid integer"),
        ("data.ner.max_rows=abc", r"data\.ner\.max_rows: Input should be a valid integer"),
        ("data.split.validation=abc", r"data\.split\.validation: Input should be a valid number"),
        ("data.split.validation=1.5", r"data\.split\.validation: Input should be less than 1"),
        ("data.ner.encoding=bogus", r"data\.ner\.encoding: unknown encoding 'bogus'"),
        ("data.sentiment.format=xlsx", r"data\.sentiment\.format: Input should be 'auto'"),
        (
            "export.prune.distill.alpha=abc",
            r"export\.prune\.distill\.alpha: Input should be a valid number",
        ),
        (
            "export.prune.distill.temperature=0",
            r"export\.prune\.distill\.temperature: Input should be greater than 0",
        ),
        ("export.prune.levels=[0,1.5]", r"export\.prune\.levels\.1: Input should be less than 1"),
        ("export.per_channel=sometimes", r"export\.per_channel: .*'sometimes'"),
        ("fewshot.precision=16", r"fewshot\.precision: Input should be 'auto'"),
        (
            "evaluate.bootstrap.confidence=95",
            r"evaluate\.bootstrap\.confidence: Input should be less than 1",
        ),
        ("evaluate.bootstrap.resamples=0", r"evaluate\.bootstrap\.resamples: .*greater than 0"),
    ],
)
def test_wrong_typed_config_names_key_and_type(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_cfg(override))


def test_default_and_smoke_configs_are_valid() -> None:
    """Validation returns the validated config (with the values as the code reads them) and
    raises on a broken one: the same composition with one key of the wrong kind."""
    smoke = validate_config(smoke_cfg())
    assert smoke.finetune.shared.lr == 1e-3 and smoke.finetune.sentiment.batch_size == 8
    assert smoke.finetune.ner.lr == 1e-3  # composed from finetune.shared.lr
    assert smoke.pretrain.val_check_interval == 3 and smoke.model.name == "tiny_bert"
    default = validate_config(compose([], ROOT / "conf"))
    assert default.finetune.sentiment.val_check_interval == 0.5
    assert default.finetune.shared.datamodule.group_by_length is True
    assert list(default.tasks.model_dump()) == ["ner", "sentiment", "debate"]
    broken = smoke_cfg()
    broken.finetune.shared.datamodule.group_by_length = "yes"
    with pytest.raises(ConfigError, match=r"finetune\.shared\.datamodule\.group_by_length"):
        validate_config(broken)


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "+finetune.shared.group_by_lenght=true",
            "finetune.shared.group_by_lenght: unknown key; "
            "did you mean finetune.shared.datamodule.group_by_length?",
        ),
        ("+finetune.ner.lrr=1e-4", "finetune.ner.lrr: unknown key; did you mean finetune.ner.lr?"),
        ("+data.ner.max_row=5", "data.ner.max_row: unknown key; did you mean data.ner.max_rows?"),
        ("+data.nerr.train=a.txt", "data.nerr: unknown key; did you mean data.ner?"),
        (
            "+trainer.acumulate_grad_batches=2",
            "trainer.acumulate_grad_batches: unknown key; "
            "did you mean trainer.accumulate_grad_batches?",
        ),
        (
            "+trainer.max_epochs=2",
            "trainer.max_epochs: set by each stage, not in trainer: "
            "use finetune.<task>.max_epochs or pretrain.max_epochs instead",
        ),
        (
            "+export.prune.distill.temprature=2",
            "export.prune.distill.temprature: unknown key; "
            "did you mean export.prune.distill.temperature?",
        ),
        (
            "+serve.limits.max_text=5",
            "serve.limits.max_text: unknown key; did you mean serve.limits.max_texts?",
        ),
        (
            "+fewshot.prompts.sentiment.verbaliser={a: b}",
            "fewshot.prompts.sentiment.verbaliser: unknown key; "
            "did you mean fewshot.prompts.sentiment.verbalizer?",
        ),
        ("+finetune.shared.zzz=1", "finetune.shared.zzz: unknown key"),
        ("~pretrain.batch_size", "pretrain.batch_size: missing (the code reads this key)"),
    ],
)
def test_unknown_key_names_the_key_and_the_closest_valid_one(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(smoke_cfg(override))
    assert str(err.value) == message


@pytest.mark.parametrize(
    "override,message",
    [
        # pretraining reads it with int(): 0.5 would silently become 0
        ("pretrain.val_check_interval=0.5", r"pretrain\.val_check_interval: expected an int > 0"),
        ("finetune.ner.val_check_interval=1.5", r"or a float in \(0, 1\]"),
        ("finetune.ner.val_check_interval=0", r"finetune\.ner\.val_check_interval: expected"),
        ("finetune.shared.limit_train_batches=0.5", r"limit_train_batches: .*valid integer"),
        ("finetune.ner.batch_size=0", r"finetune\.ner\.batch_size: .*greater than 0"),
        ("finetune.debate.strategy=qlora", r"finetune\.debate\.strategy: .*'full' or 'lora'"),
        # null is a value in a task's section now (no longer "inherit"): one the code can't read
        ("finetune.ner.batch_size=null", r"finetune\.ner\.batch_size: .*valid integer; got None"),
        ("finetune.shared.datamodule.shuffle_batches=1", r"shuffle_batches: .*valid boolean"),
        ("trainer.precision=16", r"trainer\.precision: Input should be 'auto'"),
        ("serve.port=70000", r"serve\.port: Input should be less than or equal to 65535"),
        ("mlflow.enabled=maybe", r"mlflow\.enabled: Input should be a valid boolean"),
    ],
)
def test_types_are_those_the_code_reads(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_cfg(override))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["fewshot.causal.interpolate=[0,1.0]"], r"interpolate\.0: Input should be greater than 0"),
        (["fewshot.causal.interpolate=[]"], r"interpolate: List should have at least 1 item"),
        (
            ["fewshot.causal.adapter=lora", "fewshot.causal.interpolate=[0.5,1.0]"],
            r"fewshot\.causal\.interpolate: mixing weights needs fewshot\.causal\.adapter=full",
        ),
    ],
)
def test_weight_mixing_is_refused_where_there_is_nothing_to_mix(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_cfg(*overrides))
    mixed = validate_config(smoke_cfg("fewshot.causal.interpolate=[0.5,1.0]"))
    assert mixed.fewshot.causal.interpolate == [0.5, 1.0]  # every weight trains: accepted


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "fewshot.causal.self_training.unlabelled=0",
            r"self_training\.unlabelled: Input should be",
        ),
        ("fewshot.causal.self_training.per_class=-1", r"self_training\.per_class: Input should"),
        ("fewshot.causal.self_training.steps=1.5", r"self_training\.steps: Input should be"),
    ],
)
def test_self_training_counts_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_cfg(override))


def test_fractions_and_counts_of_batches_both_pass() -> None:
    """Lightning reads an int as batches and a float as a share of the epoch: both valid."""
    cfg = validate_config(
        smoke_cfg("finetune.ner.val_check_interval=3", "finetune.sentiment.val_check_interval=0.25")
    )
    assert (cfg.finetune.ner.val_check_interval, cfg.finetune.sentiment.val_check_interval) == (
        3,
        0.25,
    )


def test_unknown_key_refused_by_hydra_is_named_like_the_schema_does() -> None:
    """Without `+`, Hydra refuses the key; the CLI turns that into the same one line."""
    from hydra.errors import HydraException

    from emergent.schema import unknown_override

    with pytest.raises(HydraException) as err:
        smoke_cfg("finetune.shared.group_by_lenght=true")
    found = unknown_override(err.value, smoke_cfg())
    assert str(found) == (
        "finetune.shared.group_by_lenght: unknown key; "
        "did you mean finetune.shared.datamodule.group_by_length?"
    )
    # A key the schema accepts but conf/ does not set: the fix is the `+`, not another key.
    with pytest.raises(HydraException) as err:
        smoke_cfg("trainer.profiler=simple")
    assert str(unknown_override(err.value, smoke_cfg())) == (
        "trainer.profiler: not set in conf/, so add it with a plus: +trainer.profiler=..."
    )


def test_dvc_cli_validates_params_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from emergent.stages.__main__ import main

    cfg = smoke_cfg()
    cfg.finetune.shared.lr = "abc"
    (tmp_path / "params.yaml").write_text(params_text(cfg), encoding="utf-8")
    monkeypatch.setenv("EMERGENT_ROOT", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["ingest"])
    assert exit_.value.code == 1
    assert "error: finetune.shared.lr: Input should be a valid number" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_dvc_cli_refuses_a_misspelt_key_in_params_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """What DVC runs (`python -m emergent.stages`, reading params.yaml) stops before any work."""
    from emergent.stages.__main__ import main

    cfg = smoke_cfg()
    OmegaConf.update(cfg, "finetune.shared.group_by_lenght", True, force_add=True)
    (tmp_path / "params.yaml").write_text(params_text(cfg), encoding="utf-8")
    monkeypatch.setenv("EMERGENT_ROOT", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--task", "ner"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "error: finetune.shared.group_by_lenght: unknown key; "
        "did you mean finetune.shared.datamodule.group_by_length?\n"
    )
    assert not (tmp_path / "models").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("plus", ["+", ""])
def test_hydra_cli_refuses_a_misspelt_key_at_once_in_one_line(plus: str, tmp_path: Path) -> None:
    """`python -m emergent finetune task=ner +finetune.shared.group_by_lenght=true`: one line
    naming the key, exit 1, no traceback and no run folder (it fails before Hydra starts)."""
    import subprocess
    import sys

    env = {**os.environ, "EMERGENT_ROOT": str(ROOT), "PYTHONPATH": str(ROOT / "src")}
    argv = ["finetune", "task=ner", f"{plus}finetune.shared.group_by_lenght=true"]
    done = subprocess.run(
        [sys.executable, "-m", "emergent", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "error: finetune.shared.group_by_lenght: unknown key; "
        "did you mean finetune.shared.datamodule.group_by_length?\n"
    )
    assert done.stdout == "" and not (tmp_path / "outputs").exists()


def test_trainer_key_set_by_the_stage_says_which_key_to_use() -> None:
    from emergent.training import build_trainer

    trainer_cfg = OmegaConf.create(
        {
            "accelerator": "cpu",
            "devices": 1,
            "precision": "32-true",
            "enable_progress_bar": False,
            "max_epochs": 2,
        }
    )
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs: .*finetune\.<task>\.max_epochs"):
        build_trainer(trainer_cfg, max_epochs=1)


# --- predict -------------------------------------------------------------------------------


class FakePredictor:
    """Echoes texts like the real predictor; fails on empty text like it does."""

    def predict(self, texts: list[str]) -> list[dict]:
        assert all(t.strip() for t in texts), "empty text reached the model"
        return [{"text": t, "label": "positive"} for t in texts]


def predict_cfg(**predict_keys: Any) -> PredictConfig:
    """The `predict` section as the command reads it (validated, typed)."""
    return PredictConfig(**predict_keys)


def test_every_input_line_gets_one_indexed_output_line(tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_text("good film\n\n  \nbad film\n", encoding="utf-8")
    cfg = predict_cfg(file=str(file))
    inputs = predict.read_inputs(cfg, None, Paths(tmp_path, tmp_path))
    out = list(predict.records(FakePredictor(), inputs))
    assert out == [
        {"index": 0, "text": "good film", "label": "positive"},
        {"index": 1, "error": "empty text"},
        {"index": 2, "error": "empty text"},
        {"index": 3, "text": "bad film", "label": "positive"},
    ]


def test_stdin_blank_lines_keep_their_index(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"a\n\nb\n"))
    monkeypatch.setattr("sys.stdin", stdin)
    inputs = predict.read_inputs(predict_cfg(), None, Paths(tmp_path, tmp_path))
    assert [r["index"] for r in predict.records(FakePredictor(), inputs)] == [0, 1, 2]
    assert inputs == ["a", "", "b"]


def test_predict_text_key_holds_texts_the_command_line_cannot(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path)
    assert predict.read_inputs(predict_cfg(text="rating=5, -2"), None, paths) == ["rating=5, -2"]
    assert predict.read_inputs(predict_cfg(text=["a", "b"]), None, paths) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"predict\.text: .*use one"):
        predict.read_inputs(predict_cfg(text="a"), ["b"], paths)


def test_binary_predict_file_hint_does_not_name_a_data_setting(tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError) as err:
        predict.read_inputs(predict_cfg(file=str(file)), None, Paths(tmp_path, tmp_path))
    assert "data." not in str(err.value) and "predict reads UTF-8" in str(err.value)


def test_predict_with_another_task_than_the_package_is_a_stage_error(tmp_path: Path) -> None:
    from emergent.serving.predictor import Predictor

    # export.json and labels.json of a shipped sentiment package (no model needed to refuse)
    shutil.copytree(ROOT / "tests/fixtures/export/sentiment", tmp_path, dirs_exist_ok=True)
    with pytest.raises(StageError, match=r"holds a 'sentiment' model, not 'ner'"):
        Predictor(tmp_path, task="ner")


# --- prepared data -------------------------------------------------------------------------


def test_truncated_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "lab', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl:2: invalid JSON"):
        read_jsonl(path)


def test_prepared_file_changed_after_ingest_is_named(tmp_path: Path) -> None:
    from emergent.io import sha256_file, write_json, write_jsonl

    write_jsonl(tmp_path / "sentiment" / "train.jsonl", [{"text": "a", "label": "x"}])
    files = {"sentiment/train.jsonl": sha256_file(tmp_path / "sentiment" / "train.jsonl")}
    write_json(tmp_path / "manifest.json", {"files": files})
    assert verify_prepared(tmp_path)["files"] == files
    with (tmp_path / "sentiment" / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"text": "b", "label": "x"}) + "\n")
    with pytest.raises(DataError, match=r"sentiment/train\.jsonl: changed since ingest"):
        verify_prepared(tmp_path)


def test_empty_prepared_split_names_task_and_split(tmp_path: Path) -> None:
    from emergent.data.quality import build_checks
    from emergent.io import write_jsonl

    for split, rows in (("train", 3), ("validation", 0), ("test", 2)):
        write_jsonl(
            tmp_path / "sentiment" / f"{split}.jsonl",
            [{"text": f"t{i}", "label": "x"} for i in range(rows)],
        )
    cfg = smoke_cfg()
    with pytest.raises(DataError, match=r"validation split of task 'sentiment' is empty"):
        build_checks(tmp_path, validate_config(cfg).data, [SENT])


def test_predict_prints_every_record_then_fails_naming_empty_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from emergent.errors import PredictionError

    monkeypatch.setattr(predict, "Predictor", lambda *a, **k: FakePredictor())
    with pytest.raises(PredictionError, match=r"empty text at index 1 \(1 of 3 inputs\)"):
        cfg = smoke_cfg()
        paths = Paths(tmp_path, tmp_path)
        predict.run(cfg, paths, SENT, texts=["a", " ", "b"], settings=validate_config(cfg))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in lines] == [0, 1, 2] and lines[1] == {
        "index": 1,
        "error": "empty text",
    }
