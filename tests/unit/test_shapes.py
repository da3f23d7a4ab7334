"""Word shapes: the shape function, its two callers (training words and the server's raw
text), the collator, and a model that reads them (starts as the model without them,
round-trips through save/load)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertForTokenClassification

from emergent.models.backbone import lowercases, train_wordpiece
from emergent.models.classifier import enable_word_shapes
from emergent.models.finetuned import load_finetuned
from emergent.tasks import TokenClassificationTask
from emergent.tasks.shapes import SHAPES, model_inputs, text_shapes, token_shapes, word_shape
from tests.helpers import tiny_bert_config

NER = TokenClassificationTask("ner", {"metric": "f1", "label": "F1"})


@pytest.mark.parametrize(
    ("word", "shape"),
    [
        ("paris", "lower"),
        ("Paris", "capitalised"),
        ("I", "capitalised"),
        ("NASA", "upper"),
        ("iPhone", "mixed"),
        ("McDonald", "mixed"),
        ("2016", "digit"),
        ("B52", "digit"),
        ("#Trump", "capitalised"),
        ("Obama's", "capitalised"),
        ("@nasa", "lower"),
        ("...", "other"),
        ("東京", "other"),
    ],
)
def test_word_shape_of_known_words(word: str, shape: str) -> None:
    assert SHAPES[word_shape(word)] == shape


def test_training_words_and_raw_text_give_the_same_shapes() -> None:
    tokenizer = train_wordpiece(
        ["barack obama visited paris in 2016"] * 5, 60, 1, lowercase=True, max_length=32
    )
    assert lowercases(tokenizer)
    words = ["Barack", "OBAMA", "visited", "Paris", "in", "2016"]
    enc = tokenizer(words, is_split_into_words=True)
    from_words = token_shapes(enc.word_ids(), words)
    text = " ".join(words)
    raw = tokenizer(text, return_offsets_mapping=True)
    from_text = text_shapes(text, raw.word_ids(), raw["offset_mapping"])
    assert from_words == from_text
    names = [SHAPES[s] for s in from_words]
    assert names[0] == names[-1] == "none"  # [CLS] and [SEP]
    firsts = [names[enc.word_ids().index(w)] for w in range(len(words))]
    assert firsts == ["capitalised", "upper", "lower", "capitalised", "lower", "digit"]
    cased = train_wordpiece(["a b"], 40, 1, lowercase=False, max_length=8)
    assert not lowercases(cased)


def test_rows_carry_shapes_and_the_collator_pads_them() -> None:
    tokenizer = train_wordpiece(["obama paris"] * 5, 40, 1, lowercase=True, max_length=32)
    examples = [
        {"tokens": ["Obama"], "tags": ["B-person"]},
        {"tokens": ["in", "PARIS", "today"], "tags": ["O", "B-loc", "O"]},
    ]
    labels = ["O", "B-loc", "I-loc", "B-person", "I-person"]
    rows = NER.encode(tokenizer, examples, labels, 32)
    batch = NER.collator(tokenizer)(rows)
    shapes = batch["word_shape_ids"]
    assert shapes.shape == batch["input_ids"].shape
    assert shapes[0][batch["attention_mask"][0] == 0].tolist() == [0] * int(
        (batch["attention_mask"][0] == 0).sum()
    )
    assert rows[0]["word_shape_ids"][1] == SHAPES.index("capitalised")
    assert SHAPES.index("upper") in rows[1]["word_shape_ids"]


def _tiny_model(labels: int = 3) -> BertForTokenClassification:
    return BertForTokenClassification(tiny_bert_config(vocab_size=40, num_labels=labels)).eval()


def test_a_model_with_shapes_starts_as_the_model_without(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _tiny_model()
    batch = {
        "input_ids": torch.tensor([[2, 7, 9, 11, 3]]),
        "attention_mask": torch.ones(1, 5, dtype=torch.long),
        "word_shape_ids": torch.tensor([[0, 2, 3, 6, 0]]),
    }
    with torch.no_grad():
        before = model(**model_inputs(model.config, batch)).logits
        enable_word_shapes(model)
        assert set(model_inputs(model.config, batch)) == {
            "input_ids",
            "attention_mask",
            "token_type_ids",
        }
        after = model(**model_inputs(model.config, batch)).logits
    torch.testing.assert_close(before, after)  # every shape row starts as segment 0

    with torch.no_grad():  # a trained shape row changes what the model sees
        model.bert.embeddings.token_type_embeddings.weight[2] += torch.linspace(-1, 1, 16)
        moved = model(**model_inputs(model.config, batch)).logits
    assert not torch.allclose(moved, after)
    model.save_pretrained(str(tmp_path))
    (tmp_path / "labels.json").write_text('["O", "B-x", "I-x"]')
    train_wordpiece(["a b"], 40, 1, True, 32).save_pretrained(str(tmp_path))
    loaded, _, _ = load_finetuned(NER, tmp_path)
    with torch.no_grad():
        again = loaded(**model_inputs(loaded.config, batch)).logits
    torch.testing.assert_close(moved, again)
