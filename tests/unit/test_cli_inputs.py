"""Command lines: argument splitting, up-front config validation, predict's input and output,
and one clear line (never a traceback) for each kind of bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emergent.__main__ import split_stage
from emergent.config import Paths, params_text
from emergent.data.layout import verify_prepared
from emergent.errors import ConfigError, DataError, StageError
from emergent.io import read_jsonl
from emergent.schema import validate_config
from emergent.stages import predict
from tests.conftest import smoke_cfg
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
    validate_config(smoke_cfg())
    validate_config(smoke_cfg("experiment=scratch"))


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


def test_trainer_key_set_by_the_stage_says_which_key_to_use() -> None:
    from emergent.training import build_trainer

    trainer_cfg = OmegaConf.create({"accelerator": "cpu", "max_epochs": 2})
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs: .*finetune\.<task>\.max_epochs"):
        build_trainer(trainer_cfg, max_epochs=1)


# --- predict -------------------------------------------------------------------------------


class FakePredictor:
    """Echoes texts like the real predictor; fails on empty text like it does."""

    def predict(self, texts: list[str]) -> list[dict]:
        assert all(t.strip() for t in texts), "empty text reached the model"
        return [{"text": t, "label": "positive"} for t in texts]


def predict_cfg(**predict_keys):
    cfg = smoke_cfg()
    for key, value in predict_keys.items():
        cfg.predict[key] = value
    return cfg


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
    from emergent.tasks import task_spec

    spec = task_spec(smoke_cfg(), "sentiment")
    (tmp_path / "export.json").write_text(json.dumps({"task_spec": spec, "max_length": 32}))
    (tmp_path / "labels.json").write_text(json.dumps(["negative", "positive"]))
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
        build_checks(tmp_path, cfg.data, [SENT])


def test_predict_prints_every_record_then_fails_naming_empty_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from emergent.errors import PredictionError

    monkeypatch.setattr(predict, "Predictor", lambda *a, **k: FakePredictor())
    with pytest.raises(PredictionError, match=r"empty text at index 1 \(1 of 3 inputs\)"):
        predict.run(predict_cfg(), Paths(tmp_path, tmp_path), SENT, texts=["a", " ", "b"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in lines] == [0, 1, 2] and lines[1] == {
        "index": 1,
        "error": "empty text",
    }
