"""Mean pooling for sequence classification: the masked mean, the backbone's own pooling
config, and a mean-pooled model that saves, loads and ignores padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emergent.errors import ConfigError
from emergent.models.backbone import backbone_dir
from emergent.models.classifier import load_task_model
from emergent.models.finetuned import load_finetuned
from emergent.models.pooling import (
    POOLING_KEY,
    MeanPooledBertForSequenceClassification,
    backbone_pooling,
    carry_pooling,
    masked_mean,
    resolve_pooling,
)
from emergent.tasks import SequenceClassificationTask
from tests.helpers import tiny_bert_config

SENT = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "accuracy"})


def test_masked_mean_leaves_padding_out() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [0, 0], [0, 0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(hidden, mask).tolist() == [[2.0, 3.0], [5.0, 6.0]]


def test_the_packaged_backbone_says_mean_and_pretraining_carries_it(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    source = backbone_dir(OmegaConf.create({"name": "minilm", "source": _minilm_source()}))
    assert backbone_pooling(source) == "mean"
    assert backbone_pooling(tmp_path) is None
    assert resolve_pooling("auto", tmp_path) == "cls"
    assert carry_pooling(source, tmp_path)
    assert resolve_pooling("auto", tmp_path) == "mean"
    assert resolve_pooling("cls", tmp_path) == "cls"
    with pytest.raises(ConfigError, match=r"finetune\.pooling"):
        resolve_pooling("max", tmp_path)


def _minilm_source() -> str:
    from emergent.config import compose
    from tests.conftest import ROOT

    return str(compose([], ROOT / "conf").model.source)


def _tiny_backbone(path: Path, pooling: str | None) -> Path:
    from transformers import BertModel

    BertModel(tiny_bert_config()).save_pretrained(str(path))
    if pooling:
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "pooling_mode_mean_tokens": pooling == "mean",
                    "pooling_mode_cls_token": pooling == "cls",
                }
            )
        )
    return path


def test_auto_pooling_builds_a_mean_model_that_round_trips(tmp_path: Path) -> None:
    backbone = _tiny_backbone(tmp_path / "backbone", "mean")
    model = load_task_model(SENT, str(backbone), ["neg", "pos"], {}, pooling="auto").eval()
    assert isinstance(model, MeanPooledBertForSequenceClassification)
    assert model.bert.pooler is None
    ids = torch.tensor([[2, 7, 9, 3]])
    padded = torch.tensor([[2, 7, 9, 3, 0, 0]])
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        with_pad = model(input_ids=padded, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])).logits
    torch.testing.assert_close(plain, with_pad)  # padding changes nothing

    saved = tmp_path / "sentiment"
    model.save_pretrained(str(saved))
    (saved / "labels.json").write_text('["neg", "pos"]')
    assert json.loads((saved / "config.json").read_text())[POOLING_KEY] == "mean"
    from emergent.models.backbone import train_wordpiece

    train_wordpiece(["a b"], 50, 1, True, 32).save_pretrained(str(saved))
    loaded, _, labels = load_finetuned(SENT, saved)
    assert isinstance(loaded, MeanPooledBertForSequenceClassification) and labels == ["neg", "pos"]
    with torch.no_grad():
        again = loaded(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(plain, again)


def test_cls_pooling_keeps_the_library_model(tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification

    backbone = _tiny_backbone(tmp_path / "backbone", "mean")
    model = load_task_model(SENT, str(backbone), ["neg", "pos"], {}, pooling="cls")
    assert type(model) is BertForSequenceClassification
    assert getattr(model.config, POOLING_KEY) == "cls"
