"""Sub-word label alignment, padding, freezing and dropout on real (tiny) models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertForTokenClassification

from emergent.config import compose
from emergent.models.backbone import train_wordpiece
from emergent.models.freezing import freeze, unfreeze_encoder
from emergent.tasks import SequenceClassificationTask, TokenClassificationTask, get_task
from emergent.tasks.base import Window
from emergent.tasks.token_classification import IGNORE
from emergent.tasks.windows import owned_positions
from tests.conftest import ROOT
from tests.helpers import tiny_bert_config

TEXTS = ["Empire State Building is in New York .", "Barack Obama visited Paris ."] * 10
NER = TokenClassificationTask("ner", {"metric": "f1", "label": "entity F1"}, stride=4)
SENT = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "accuracy"})


@pytest.fixture(scope="module")
def tokenizer():
    # Small vocabulary so that long words split into several sub-tokens.
    return train_wordpiece(TEXTS, vocab_size=60, min_frequency=1, lowercase=False, max_length=32)


def test_tasks_come_from_config_with_their_headline() -> None:
    cfg = compose([], ROOT / "conf")
    ner, sentiment, debate = (get_task(cfg, n) for n in ("ner", "sentiment", "debate"))
    assert isinstance(ner, TokenClassificationTask) and ner.headline.metric == "f1"
    assert isinstance(sentiment, SequenceClassificationTask)
    assert sentiment.headline.metric == "accuracy"
    assert isinstance(debate, SequenceClassificationTask)
    assert debate.headline.metric == "f1_macro"


def test_label_set_from_data() -> None:
    examples = [{"tags": ["B-person", "O", "I-person"]}, {"tags": ["B-geo-loc"]}]
    assert NER.labels(examples) == ["O", "B-geo-loc", "I-geo-loc", "B-person", "I-person"]
    assert SENT.labels([{"label": "pos"}, {"label": "neg"}]) == ["neg", "pos"]


def fixed_wordpiece(vocab: list[str]) -> object:
    """A BERT-style fast tokenizer over a hand-written vocabulary: its splits are known."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *vocab])}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def test_first_subtoken_carries_the_label() -> None:
    # "Empire" -> Em ##pi ##re (three sub-tokens), "State" -> State (one)
    tokenizer = fixed_wordpiece(["Em", "##pi", "##re", "State"])
    example = {"tokens": ["Empire", "State"], "tags": ["B-facility", "I-facility"]}
    labels = ["O", "B-facility", "I-facility"]
    (row,) = NER.encode(tokenizer, [example], labels, max_length=32)
    #                           [CLS]   Em  ##pi    ##re    State [SEP]
    assert row["input_ids"] == [2, 4, 5, 6, 7, 3]
    assert row["labels"] == [IGNORE, 1, IGNORE, IGNORE, 2, IGNORE]
    assert row["_words"] == [0, 1]
    (all_tokens,) = NER.encode(tokenizer, [example], labels, 32, label_all_tokens=True)
    # B- on the first sub-token, I- on the later ones of the same word
    assert all_tokens["labels"] == [IGNORE, 1, 2, 2, 2, IGNORE]


def test_collator_pads_token_labels_with_ignore(tokenizer) -> None:
    examples = [{"tokens": t.split(), "tags": ["O"] * len(t.split())} for t in TEXTS[:2]]
    rows = NER.encode(tokenizer, examples, ["O"], 32)
    batch = NER.collator(tokenizer)(rows)
    short = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    n = len(rows[short]["input_ids"])
    assert n < batch["input_ids"].shape[1]
    assert (batch["labels"][short, n:] == IGNORE).all()
    assert (batch["attention_mask"][short, n:] == 0).all()
    assert batch["example"].tolist() == [0, 1]


def test_long_sentence_is_windowed_and_every_word_scored(tokenizer) -> None:
    """A 500-word sentence: every word is owned by exactly one window, every gold entity is
    scored (a perfect predictor gets F1 1.0, not the recall of a truncated prefix)."""
    words = ("Barack Obama visited Paris . " * 100).split()
    tags = ["B-person", "I-person", "O", "B-geo-loc", "O"] * 100
    example = {"tokens": words, "tags": tags}
    labels = NER.labels([example])
    rows = NER.encode(tokenizer, [example], labels, max_length=32)
    assert len(rows) > 10 and all(len(r["input_ids"]) <= 32 for r in rows)
    owned = sorted(w for r in rows for w in r["_words"])
    assert owned == list(range(500)), "each word predicted exactly once"
    gold = {r: [] for r in range(len(rows))}
    for r, row in enumerate(rows):  # a perfect predictor: one-hot gold at owned positions
        probs = np.zeros((len(row["input_ids"]), len(labels)))
        for pos, word in zip(row["_positions"], row["_words"], strict=True):
            probs[pos, labels.index(tags[word])] = 1.0
        gold[r] = NER.row_output(probs, row)
    pred, _ = NER.assemble([example], labels, gold, rows)
    result = NER.evaluate([example], labels, pred, [[1.0] * 500])
    assert result.metrics["f1"] == 1.0
    assert result.per_class["person"]["support"] == 100
    assert result.per_class["geo-loc"]["support"] == 100


def test_window_ownership_prefers_the_most_central_window() -> None:
    # two windows overlapping on words 3 and 4; word 3 is more central in window 0
    # (margin 1 vs 0), word 4 more central in window 1.
    windows = [[None, 0, 1, 2, 3, 4, None], [None, 3, 4, 5, 6, 7, None]]
    owned = owned_positions(windows)
    assert [w for _, w in owned[0]] == [0, 1, 2, 3]
    assert [w for _, w in owned[1]] == [4, 5, 6, 7]


def test_served_entities_have_character_offsets() -> None:
    text = "Barack Obama visited Paris"
    labels = ["O", "B-person", "I-person", "B-geo-loc", "I-geo-loc"]
    tags = [1, 2, 0, 3]
    probs = np.zeros((6, 5))
    for pos, tag in zip(range(1, 5), tags, strict=True):
        probs[pos, tag] = 0.9
    window = Window(
        probs, [None, 0, 1, 2, 3, None], [(0, 0), (0, 6), (7, 12), (13, 20), (21, 26), (0, 0)]
    )
    answer = NER.respond(text, [window], labels)
    assert answer["entities"] == [
        {"type": "person", "start": 0, "end": 12, "text": "Barack Obama", "score": 0.9},
        {"type": "geo-loc", "start": 21, "end": 26, "text": "Paris", "score": 0.9},
    ]
    sentiment = SENT.respond("fine", [Window(np.array([0.25, 0.75]), [], [])], ["neg", "pos"])
    assert sentiment == {"label": "pos", "probabilities": {"neg": 0.25, "pos": 0.75}}


def test_unknown_label_is_an_error_for_sequence_tasks(tokenizer) -> None:
    from emergent.errors import DataError

    with pytest.raises(DataError, match=r"labels \['maybe'\] unknown to the model"):
        SENT.encode(tokenizer, [{"text": "x", "label": "maybe"}], ["neg", "pos"], 16)


def test_unknown_gold_label_encodes_when_scoring_a_sequence_task(tokenizer) -> None:
    """`unknown_labels="ignore"` (scoring a file with a label the model never saw): the
    example encodes with label -100 and counts as a miss against its own label."""
    examples = [{"text": "Paris", "label": "pos"}, {"text": "New York", "label": "maybe"}]
    rows = SENT.encode(tokenizer, examples, ["neg", "pos"], 16, unknown_labels="ignore")
    assert [(r["example"], r["labels"]) for r in rows] == [(0, 1), (1, -100)]
    assert (
        rows[1]["input_ids"] == tokenizer("New York", truncation=True, max_length=16)["input_ids"]
    )
    result = SENT.evaluate(examples, ["neg", "pos"], [[1], [1]], [[0.2, 0.8], [0.3, 0.7]])
    assert result.metrics["accuracy"] == 0.5
    with pytest.raises(ValueError, match="unknown_labels must be 'error' or 'ignore'"):
        SENT.encode(tokenizer, examples, ["neg", "pos"], 16, unknown_labels="skip")


def tiny_model() -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(
        tiny_bert_config(
            vocab_size=60,
            num_hidden_layers=3,
            max_position_embeddings=512,
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
    model = load_task_model(NER, str(tmp_path), ["O", "B-x", "I-x"], {"hidden_dropout_prob": 0.5})
    assert model.training, "from_pretrained returns eval mode; dropout must be on"
    ids = torch.randint(5, 60, (2, 10))
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert model.config.hidden_dropout_prob == 0.5


def test_layerwise_learning_rates_decay_down_the_stack() -> None:
    from emergent.models.optim import layer_depth, layerwise_param_groups, param_groups

    model = tiny_model()  # three encoder layers
    groups = layerwise_param_groups(model.named_parameters(), 0.01, 1.0, 0.5, num_layers=3)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["bert.embeddings.word_embeddings.weight"])] == 0.125
    assert rate[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.25
    assert rate[id(named["bert.encoder.layer.1.output.dense.weight"])] == 0.5
    assert rate[id(named["bert.encoder.layer.2.output.dense.weight"])] == 1.0
    assert rate[id(named["classifier.weight"])] == 1.0
    assert len(rate) == len(named)  # every parameter in exactly one group
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(named["bert.encoder.layer.1.output.LayerNorm.weight"])] == 0.0
    assert decay_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == 0.01
    # LoRA-wrapped names keep their depth
    assert layer_depth("base_model.model.bert.encoder.layer.4.attention.self.query.lora_A", 6) == 5
    # decay 1: exactly the groups the optimizer got before the option existed
    flat = layerwise_param_groups(model.named_parameters(), 0.01, 1e-4, 1.0, num_layers=3)
    plain = param_groups(model.named_parameters(), 0.01, 1e-4)
    assert [[id(p) for p in g["params"]] for g in flat] == [
        [id(p) for p in g["params"]] for g in plain
    ]
    assert [g["lr"] for g in flat] == [1e-4, 1e-4]
