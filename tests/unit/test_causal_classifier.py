"""A causal LM as a sequence-classification backbone, on a tiny real Llama: transformers' own
classifier (last-token pooling), LoRA and freezing with Llama's module names, and the
one-line refusals (a token task, a pooling override, LoRA names of another architecture,
the int8 export)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emergent.errors import ConfigError
from emergent.export.pipeline import require_encoder
from emergent.models.classifier import apply_lora, load_task_model
from emergent.models.freezing import freeze
from emergent.models.source import load_source_tokenizer, resolve_source
from emergent.schema import Lora
from emergent.tasks import SequenceClassificationTask, TokenClassificationTask
from tests.helpers import tiny_causal_lm

LABELS = ["negative", "positive"]
SENTIMENT = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "Accuracy"})
NER = TokenClassificationTask("ner", {"metric": "f1", "label": "F1"})
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


def _classifier(tiny: Path):
    return load_task_model(SENTIMENT, str(tiny), LABELS, {}, pooling="auto", causal=True)


def test_a_causal_backbone_gives_transformers_own_classifier_and_it_learns(tiny: Path) -> None:
    model = _classifier(tiny)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 2 and model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.pad_token_id is not None and model.training
    tokenizer = load_source_tokenizer(resolve_source(tiny))
    batch = tokenizer(
        ["a good film", "a bad, dull and long film"], padding=True, return_tensors="pt"
    )
    labels = torch.tensor([1, 0])
    with torch.no_grad():
        before = model(**batch).logits.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = model(**batch).logits
    assert before.shape == after.shape == (2, 2)
    assert not torch.allclose(before, after)


def test_the_padded_text_is_classified_from_its_last_real_token(tiny: Path) -> None:
    """Right padding must not move a text's logits: the classifier reads the last non-pad
    token, which needs the config's pad_token_id to be the tokenizer's."""
    model = _classifier(tiny).eval()
    tokenizer = load_source_tokenizer(resolve_source(tiny))
    assert model.config.pad_token_id == tokenizer.pad_token_id
    alone = tokenizer(["a good film"], return_tensors="pt")
    padded = tokenizer(["a good film", "a much longer text than the first one"], padding=True)
    padded = {k: torch.tensor(v) for k, v in padded.items()}
    assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(model(**alone).logits[0], model(**padded).logits[0])


def test_lora_and_freezing_use_llamas_layers(tiny: Path) -> None:
    model = _classifier(tiny)
    frozen = freeze(model, embeddings=True, layers=1)
    assert "model.embed_tokens.weight" in frozen
    assert any(n.startswith("model.layers.0.") for n in frozen)
    assert not any(n.startswith("model.layers.1.") for n in frozen)
    peft = apply_lora(SENTIMENT, _classifier(tiny), Lora(**LORA, target_modules=["q_proj"]))
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert any("q_proj.lora_A" in n for n in trainable)
    assert any(".score." in n for n in trainable)  # the new head trains with the adapters
    assert not any("embed_tokens" in n for n in trainable)


def test_bert_lora_module_names_are_refused_naming_the_key(tiny: Path) -> None:
    lora = Lora(**LORA, target_modules=["query", "value"])
    with pytest.raises(ConfigError, match=r"^finetune\.sentiment\.lora\.target_modules: .*q_proj"):
        apply_lora(SENTIMENT, _classifier(tiny), lora)


def test_a_token_task_with_a_causal_backbone_is_refused_naming_the_key(tiny: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model\.family: .*finetune@ner") as err:
        load_task_model(NER, str(tiny), ["O", "B-person"], {}, pooling="auto", causal=True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_pooling_override_with_a_causal_backbone_is_refused(tiny: Path, pooling: str) -> None:
    with pytest.raises(ConfigError, match=r"^finetune\.sentiment\.pooling: must be auto"):
        load_task_model(SENTIMENT, str(tiny), LABELS, {}, pooling=pooling, causal=True)


def test_the_int8_export_refuses_a_causal_model_in_one_line(tiny: Path, tmp_path: Path) -> None:
    _classifier(tiny).save_pretrained(tmp_path / "sentiment")
    with pytest.raises(ConfigError, match=r"^model\.family: the int8 export handles BERT-style"):
        require_encoder(tmp_path / "sentiment")


@pytest.mark.slow
def test_the_packaged_gguf_backbone_saves_as_plain_safetensors(tmp_path: Path) -> None:
    """transformers keeps its GGUF quantizer on the de-quantized model and refuses to save it;
    the backbone pretraining passes on saves, and reloads with the same weights (~1 min)."""
    from safetensors.torch import load_file

    from emergent.config import compose
    from emergent.models.backbone import load_causal_backbone
    from tests.conftest import ROOT

    model = load_causal_backbone(compose(["model=smollm2_135m_instruct"], ROOT / "conf").model)
    assert getattr(model, "hf_quantizer", None) is None and model.training
    model.save_pretrained(tmp_path, safe_serialization=True)
    saved = load_file(tmp_path / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert saved[name].equal(model.state_dict()[name])
    assert model.config.pad_token_id == 2


def test_finetune_refuses_a_backbone_of_the_other_family_naming_the_key(
    tiny: Path, tmp_path: Path
) -> None:
    """A CLI fine-tune with the causal preset in a fresh run folder reads the project's MiniLM
    (and the other way round): one line naming model.family, before anything trains."""
    from types import SimpleNamespace

    from transformers import BertForMaskedLM

    from emergent.models.finetuning import check_backbone
    from tests.helpers import tiny_bert_config

    bert = tmp_path / "bert"
    BertForMaskedLM(
        tiny_bert_config(vocab_size=30, hidden_size=8, intermediate_size=16)
    ).save_pretrained(bert)
    causal = SimpleNamespace(family="causal")
    masked = SimpleNamespace(family="masked")
    fcfg = SimpleNamespace(pooling="auto")
    with pytest.raises(ConfigError, match=r"^model\.family: causal, but .* BertForMaskedLM"):
        check_backbone(causal, fcfg, SENTIMENT, bert)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^model\.family: masked, but .* LlamaForCausalLM"):
        check_backbone(masked, fcfg, SENTIMENT, tiny)  # type: ignore[arg-type]
    assert check_backbone(causal, fcfg, SENTIMENT, tiny) is True  # type: ignore[arg-type]
    assert check_backbone(masked, fcfg, SENTIMENT, bert) is False  # type: ignore[arg-type]
