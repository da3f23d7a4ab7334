"""A causal backbone through the pipeline's stages (a tiny real Llama as `model.source`): the
tokenizer stage keeps its own tokenizer, pretrain passes the backbone on unchanged, finetune
trains transformers' sequence classifier on it, and the export and a token task refuse it in
one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import DictConfig
from safetensors.torch import load_file

from emergent.config import Paths
from emergent.errors import ConfigError
from emergent.stages import run_stage
from tests.conftest import smoke_cfg
from tests.helpers import tiny_causal_lm

pytestmark = pytest.mark.integration


def _causal_cfg(tiny: Path, tmp: Path) -> DictConfig:
    """The smoke experiment with the tiny Llama as a causal model preset."""
    cfg = smoke_cfg(tmp=tmp)
    cfg.model.name = "tiny-llama"
    cfg.model.family = "causal"
    cfg.model.source = str(tiny)
    cfg.model.pretrained = True
    cfg.model.tokenizer.train = False
    cfg.model.config = None
    cfg.finetune.sentiment.pooling = "auto"
    return cfg


@pytest.fixture(scope="module")
def causal_project(prepared_smoke: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared smoke data, the tokenizer stage and the pretrain stage on the tiny Llama."""
    root = tmp_path_factory.mktemp("causal")
    tiny = tiny_causal_lm(root / "tiny")
    shutil.copytree(prepared_smoke, root / "data" / "prepared")
    cfg = _causal_cfg(tiny, root)
    paths = Paths(root, root)
    run_stage("tokenizer", cfg, paths)
    run_stage("pretrain", cfg, paths)
    return root


def test_pretrain_passes_a_causal_backbone_on_unchanged(causal_project: Path) -> None:
    saved = causal_project / "models" / "pretrained"
    before = load_file(causal_project / "tiny" / "model.safetensors")
    after = load_file(saved / "model.safetensors")
    assert set(before) == set(after)
    for name, tensor in before.items():
        assert after[name].equal(tensor), name
    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == "llama" and config["pad_token_id"] is not None
    metrics = json.loads((causal_project / "metrics" / "pretrain.json").read_text())
    assert metrics["skipped"] is True and "causal" in metrics["reason"]
    assert metrics["global_step"] == 0 and metrics["params_total"] > 0
    tokenizer = json.loads((causal_project / "models" / "tokenizer" / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "BPE"  # the backbone's own, not a trained WordPiece


@pytest.mark.slow
def test_finetune_trains_a_sequence_classifier_evaluate_reads_it_export_refuses_it(
    causal_project: Path, tmp_path: Path
) -> None:
    cfg = _causal_cfg(causal_project / "tiny", tmp_path)
    cfg.finetune.sentiment.strategy = "lora"
    cfg.finetune.sentiment.lora.target_modules = ["q_proj", "v_proj"]
    paths = Paths(causal_project, tmp_path)
    run_stage("finetune", cfg, paths, task="sentiment")
    model_dir = tmp_path / "models" / "sentiment"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert len(config["id2label"]) == len(json.loads((model_dir / "labels.json").read_text()))
    training = json.loads((model_dir / "training.json").read_text())
    assert training["strategy"] == "lora" and training["best_val"] is not None
    assert training["global_step"] > 0 and training["pooling"] is None
    run_stage("evaluate", cfg, paths, task="sentiment")  # reads the model back from its folder
    metrics = json.loads((tmp_path / "metrics" / "sentiment.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    with pytest.raises(ConfigError, match=r"^model\.family: the int8 export handles BERT-style"):
        run_stage("export", cfg, paths, task="sentiment")
    assert not (tmp_path / "models" / "export" / "sentiment").exists()


def test_a_token_task_and_a_pooling_override_are_refused(
    causal_project: Path, tmp_path: Path
) -> None:
    cfg = _causal_cfg(causal_project / "tiny", tmp_path)
    paths = Paths(causal_project, tmp_path)
    with pytest.raises(ConfigError, match=r"^model\.family: .*finetune@ner"):
        run_stage("finetune", cfg, paths, task="ner")
    cfg.finetune.sentiment.pooling = "mean"
    with pytest.raises(ConfigError, match=r"^finetune\.sentiment\.pooling: must be auto"):
        run_stage("finetune", cfg, paths, task="sentiment")
    assert not (tmp_path / "models").exists()
