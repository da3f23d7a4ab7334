"""Fine-tuning and evaluation stages end to end on smoke data, for both tasks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from emergent.config import Paths
from emergent.stages import run_stage
from tests.conftest import ROOT, run_cmd, smoke_cfg

# Fine-tunes and evaluates on the session's pretrained smoke model.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pretrained(smoke_pretrained: Path) -> Path:
    return smoke_pretrained


@pytest.mark.parametrize("task", ["ner", "sentiment", "debate"])
def test_finetune_then_evaluate_writes_the_contract(
    pretrained: Path, task: str, tmp_path: Path
) -> None:
    from seqeval.metrics.sequence_labeling import get_entities

    cfg = smoke_cfg()
    paths = Paths(pretrained, tmp_path)  # read the shared fixture, write only here
    run_stage("finetune", cfg, paths, task=task)
    model_dir = tmp_path / "models" / task
    labels = json.loads((model_dir / "labels.json").read_text())
    training = json.loads((model_dir / "training.json").read_text())
    headline = training["headline"]
    assert headline == {"ner": "f1", "sentiment": "accuracy", "debate": "f1_macro"}[task]
    validation = training["history"]["validation"]
    assert training["best_val"] == max(r[f"val_{headline}"] for r in validation)
    assert 0.0 <= training["padding_share"] < 1.0 and training["real_tokens"] > 0
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()

    run_stage("evaluate", cfg, paths, task=task)
    metrics = json.loads((tmp_path / "metrics" / f"{task}.json").read_text())
    details = json.loads((tmp_path / "reports" / task / "details.json").read_text())
    test_rows = [
        json.loads(line)
        for line in (pretrained / "data/prepared" / task / "test.jsonl").read_text().splitlines()
    ]
    assert metrics["n_examples"] == len(test_rows)
    assert headline in metrics and all(not isinstance(v, dict) for v in metrics.values())
    # the headline's bootstrap interval, in the headline's own units (a fraction)
    assert metrics[f"{headline}_ci_low"] <= metrics[headline] <= metrics[f"{headline}_ci_high"]
    assert metrics[f"{headline}_ci_high"] <= 1.0
    support = sum(v["support"] for v in details["per_class"].values())
    if task == "ner":
        assert labels[0] == "O" and all(t[:2] in {"B-", "I-"} for t in labels[1:])
        gold_entities = sum(len(get_entities(r["tags"])) for r in test_rows)
        assert support == gold_entities, "every gold entity is scored"
    else:
        assert labels == sorted({r["label"] for r in test_rows} | set(labels))
        assert support == len(test_rows)
    confusion = (tmp_path / "plots" / task / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted"
    for png in ("confusion.png", "per_class.png", "training.png"):
        assert (tmp_path / "plots" / task / png).stat().st_size > 1000
    errors = [
        json.loads(line)
        for line in (tmp_path / "reports" / task / "errors.jsonl").read_text().splitlines()
    ]
    for row in errors:
        if task == "ner":
            assert row["mistakes"] and all(m["gold"] != m["pred"] for m in row["mistakes"])
        else:
            assert row["gold"] != row["pred"]


def test_lora_adapters_are_merged_in_the_saved_model(pretrained: Path, tmp_path: Path) -> None:
    cfg = smoke_cfg("finetune.shared.strategy=lora", "finetune.shared.lora.r=2")
    paths = Paths(pretrained, tmp_path)
    run_stage("finetune", cfg, paths, task="sentiment")
    training = json.loads((tmp_path / "models/sentiment/training.json").read_text())
    assert training["params_trainable"] < training["params_total"] / 2
    weights = load_file(str(tmp_path / "models/sentiment/model.safetensors"))
    assert not [k for k in weights if "lora" in k]
    assert "bert.encoder.layer.0.attention.self.query.weight" in weights


def test_random_init_and_frozen_encoder(pretrained: Path, tmp_path: Path) -> None:
    """A frozen encoder leaves training with exactly the weights it started with (the
    pretrained ones), only the head learns; random init starts from other weights."""
    import torch

    start = load_file(str(pretrained / "models/pretrained/model.safetensors"))
    encoder = sorted(k for k in start if k.startswith("bert."))
    assert len(encoder) > 30  # embeddings and every layer

    def finetune(out: Path, *overrides: str) -> dict[str, torch.Tensor]:
        # Word shapes off: they add rows to the token-type table, which then trains (new
        # parameters, like the head); this test is about the pretrained weights.
        cfg = smoke_cfg(
            "finetune.shared.freeze.encoder=true", "finetune.ner.word_shapes=false", *overrides
        )
        run_stage("finetune", cfg, Paths(pretrained, out), task="ner")
        return load_file(str(out / "models/ner/model.safetensors"))

    frozen = finetune(tmp_path / "frozen")
    assert [k for k in encoder if not torch.equal(frozen[k], start[k])] == []
    labels = json.loads((tmp_path / "frozen/models/ner/labels.json").read_text())
    hidden = start["bert.embeddings.word_embeddings.weight"].shape[1]
    assert frozen["classifier.weight"].shape == (len(labels), hidden)
    training = json.loads((tmp_path / "frozen/models/ner/training.json").read_text())
    assert training["params_trainable"] == len(labels) * (hidden + 1)  # the head alone

    random = finetune(tmp_path / "random", "finetune.shared.init=random")
    assert (
        json.loads((tmp_path / "random/models/ner/training.json").read_text())["init"] == "random"
    )
    # no pretrained tensor survives random init (LayerNorm starts at ones and zeros, as in
    # pretraining's own initialisation, so only the learnt matrices are compared)
    learnt = [k for k in encoder if k.endswith("weight") and "LayerNorm" not in k]
    assert [k for k in learnt if torch.equal(random[k], start[k])] == []


def test_cli_evaluates_a_user_conll_file_without_retraining(
    pretrained: Path, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    run_stage("finetune", smoke_cfg(), Paths(pretrained, project), task="ner")
    test_file = tmp_path / "user_test.conll"
    test_file.write_text(
        "Barack\tB-person\nObama\tI-person\nin\tO\nParis\tB-geo-loc\n\nhello\tO\n", encoding="utf-8"
    )
    (project / "conf").symlink_to(ROOT / "conf")
    result = run_cmd(
        [
            sys.executable,
            "-m",
            "emergent",
            "evaluate",
            "task=ner",
            "experiment=smoke",
            f"data.ner.test={test_file}",
        ],
        cwd=project,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((project / "outputs" / "runs").glob("*/*"))
    metrics = json.loads((run_dir / "metrics" / "ner.json").read_text())
    details = json.loads((run_dir / "reports" / "ner" / "details.json").read_text())
    assert metrics["n_examples"] == 2
    assert details["per_class"]["person"]["support"] == 1
    assert details["per_class"]["geo-loc"]["support"] == 1
