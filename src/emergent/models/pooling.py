"""How a sequence classifier turns token states into one vector: `[CLS]` or mean pooling.

transformers' `BertForSequenceClassification` reads the `[CLS]` position through its pooler (a
dense layer with tanh). A sentence-embedding backbone such as all-MiniLM-L6-v2 was trained
with mean pooling over the real tokens instead, so its `[CLS]` state was never asked to sum up
the text. `MeanPooledBertForSequenceClassification` averages the last hidden states over the
attention mask and feeds that to the same classifier; the choice is saved in the model's
`config.json` (`classifier_pooling`), so evaluation, export and benchmarks rebuild the same
model from the folder alone. A model saved without the key is a `[CLS]` model, as before.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from emergent.errors import ConfigError

log = logging.getLogger(__name__)

POOLING_KEY = "classifier_pooling"  # in a model's config.json: "cls" or "mean"
POOLINGS = ("auto", "cls", "mean")
# sentence-transformers keeps a backbone's pooling in this file of the model folder
ST_POOLING = Path("1_Pooling") / "config.json"


def backbone_pooling(path: Path | str) -> str | None:
    """The pooling a backbone folder says it was trained with ("mean" or "cls"), from
    sentence-transformers' `1_Pooling/config.json` or a saved `classifier_pooling`; None when
    it says nothing (or names a pooling other than mean and CLS)."""
    path = Path(path)
    st = path / ST_POOLING
    if st.is_file():
        settings = json.loads(st.read_text(encoding="utf-8"))
        if settings.get("pooling_mode_mean_tokens"):
            return "mean"
        if settings.get("pooling_mode_cls_token"):
            return "cls"
        return None
    config = path / "config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get(POOLING_KEY)
        return value if value in ("cls", "mean") else None
    return None


def carry_pooling(source: Path | str, target: Path | str) -> bool:
    """Copy a backbone's sentence-transformers pooling config into a model folder saved from it
    (the MLM checkpoint), so `pooling=auto` still finds it downstream. True when copied."""
    src = Path(source) / ST_POOLING
    if not src.is_file():
        return False
    dst = Path(target) / ST_POOLING
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return True


def resolve_pooling(setting: str, backbone: Path | str) -> str:
    """`finetune.<task>.pooling` made concrete: `auto` is the backbone's own pooling, or
    `[CLS]` when the backbone does not say."""
    if setting not in POOLINGS:
        raise ConfigError("finetune.pooling", f"must be one of {POOLINGS}, got {setting!r}")
    if setting != "auto":
        return setting
    return backbone_pooling(backbone) or "cls"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` [B, T, H] over the positions where `mask` [B, T] is 1 (padding left
    out; a row with no real token gives zeros)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class MeanPooledBertForSequenceClassification(BertForSequenceClassification):
    """BERT sequence classifier on the mask-weighted mean of the last hidden states (no
    pooler layer: its weights would go untrained)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.bert.pooler = None
        setattr(self.config, POOLING_KEY, "mean")

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            assert input_ids is not None
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        logits = self.classifier(self.dropout(masked_mean(hidden, attention_mask)))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def pooled_class(cls: Any, config: Any) -> Any:
    """The model class for a saved or configured pooling: `cls` itself for `[CLS]`."""
    pooling = getattr(config, POOLING_KEY, None) or "cls"
    if pooling == "cls":
        return cls
    if pooling != "mean":
        raise ConfigError("finetune.pooling", f"unknown pooling {pooling!r} in the model config")
    if getattr(config, "model_type", None) != "bert":
        raise ConfigError(
            "finetune.pooling",
            f"mean pooling needs a BERT backbone, this one is {config.model_type!r}: use cls",
        )
    return MeanPooledBertForSequenceClassification
