"""Sub-word label alignment, padding, freezing and dropout on real (tiny) models."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForTokenClassification

from emergent.data.tasks import IGNORE, encode_ner, label_list, pad_batch
from emergent.models.backbone import train_wordpiece
from emergent.models.freezing import freeze, unfreeze_encoder

TEXTS = ["Empire State Building is in New York .", "Barack Obama visited Paris ."] * 10


@pytest.fixture(scope="module")
def tokenizer():
    # Small vocabulary so that long words split into several sub-tokens.
    return train_wordpiece(TEXTS, vocab_size=60, min_frequency=1, lowercase=False, max_length=32)


def test_label_list_from_data() -> None:
    examples = [{"tags": ["B-person", "O", "I-person"]}, {"tags": ["B-geo-loc"]}]
    assert label_list("ner", examples) == ["O", "B-geo-loc", "I-geo-loc", "B-person", "I-person"]
    assert label_list("sentiment", [{"label": "pos"}, {"label": "neg"}]) == ["neg", "pos"]


def test_first_subtoken_carries_the_label(tokenizer) -> None:
    example = {"tokens": ["Empire", "State"], "tags": ["B-facility", "I-facility"]}
    label2id = {"O": 0, "B-facility": 1, "I-facility": 2}
    enc = encode_ner(tokenizer, example, label2id, max_length=32)
    words = tokenizer(example["tokens"], is_split_into_words=True).word_ids()
    assert words.count(0) > 1, "test needs a word split into several sub-tokens"
    expected, previous = [], None
    for w in words:
        expected.append(IGNORE if w is None or w == previous else label2id[example["tags"][w]])
        previous = w
    assert enc["labels"] == expected
    assert sum(enc["first"]) == 2
    all_tokens = encode_ner(tokenizer, example, label2id, 32, label_all_tokens=True)
    first_word = [lab for lab, w in zip(all_tokens["labels"], words, strict=True) if w == 0]
    assert first_word == [1] + [2] * (len(first_word) - 1), "B- then I- on later sub-tokens"


def test_pad_batch_pads_token_labels_with_ignore(tokenizer) -> None:
    label2id = {"O": 0}
    rows = [
        encode_ner(tokenizer, {"tokens": t.split(), "tags": ["O"] * len(t.split())}, label2id, 32)
        for t in TEXTS[:2]
    ]
    batch = pad_batch(rows, tokenizer.pad_token_id)
    short = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    n = len(rows[short]["input_ids"])
    assert (batch["labels"][short, n:] == IGNORE).all()
    assert (batch["attention_mask"][short, n:] == 0).all()


def tiny_model() -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(
        BertConfig(
            vocab_size=60,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
            hidden_dropout_prob=0.3,
        )
    )


def test_frozen_weights_are_bit_identical_after_training() -> None:
    model = tiny_model().train()
    frozen = freeze(model, embeddings=True, layers=2)
    assert frozen and all(
        n.startswith(("bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"))
        for n in frozen
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    from emergent.models.optim import param_groups

    opt = torch.optim.AdamW(param_groups(model.named_parameters(), 0.1, 1e-2, include_frozen=True))
    ids = torch.randint(5, 60, (4, 12))
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(
            model(input_ids=ids).logits.reshape(-1, 3), torch.randint(0, 3, (48,))
        )
        loss.backward()
        opt.step()
        opt.zero_grad()
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, before[name]), f"{name} changed but is frozen"
        else:
            assert not torch.equal(param, before[name]), f"{name} did not train"
    assert unfreeze_encoder(model) > 0
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_whole_encoder_leaves_only_the_head() -> None:
    model = tiny_model()
    freeze(model, encoder=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]
    with pytest.raises(ValueError, match=r"freeze\.layers=9 but the encoder has 3"):
        freeze(tiny_model(), layers=9)


def test_loaded_task_model_trains_with_dropout(tmp_path) -> None:
    from emergent.models.classifier import load_task_model

    tiny_model().save_pretrained(str(tmp_path))
    model = load_task_model("ner", str(tmp_path), ["O", "B-x", "I-x"], {"hidden_dropout_prob": 0.5})
    assert model.training, "from_pretrained returns eval mode; dropout must be on"
    ids = torch.randint(5, 60, (2, 10))
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert model.config.hidden_dropout_prob == 0.5
