"""Masking, block packing, the masked-positions-only loss, optimizer groups and schedules."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from emergent.data.mlm import MaskingCollator, pack_blocks
from emergent.models.backbone import train_wordpiece
from emergent.models.mlm import (
    head_parameter_names,
    init_output_bias,
    masked_lm_loss,
    set_dropout,
    tie_decoder,
)
from emergent.models.optim import linear_warmup_decay, param_groups

TEXTS = [
    "The quick brown fox jumps over the lazy dog .",
    "New York City is big and loud .",
    "Empire State Building = ESB .",
    "I love this movie , it is great fun .",
] * 20


def tiny_mlm(vocab_size: int, **config: object) -> BertForMaskedLM:
    """A one-layer, 16-wide BertForMaskedLM (config keys override the defaults)."""
    defaults = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    return BertForMaskedLM(
        BertConfig(vocab_size=vocab_size, intermediate_size=32, **{**defaults, **config})
    )


@pytest.fixture(scope="module")
def tokenizer():
    # Room for every merge these texts allow (136 tokens): a size that cuts through tied merge
    # counts lets the trainer's hash-map order pick which tokens survive, and CI once got "Ne"
    # where another run got "New" (huggingface/tokenizers#1794).
    return train_wordpiece(TEXTS, vocab_size=200, min_frequency=1, lowercase=False, max_length=32)


def test_trained_wordpiece_gives_the_same_ids_every_time() -> None:
    """The trainer breaks frequency ties in hash-map order (huggingface/tokenizers#1794): the
    same tokens came out under different ids run to run, so smoke and scratch models did not
    reproduce. Ids are now canonical: specials first, then the other tokens sorted. (A vocab
    size above what the texts can fill: ties AT the size cut-off can still change which
    tokens make it, which ordering cannot fix.)"""
    texts = [f"{w} {v} ##{w}{v} {v.upper()}" for w in "abcdefghij" for v in "klmnopqrst"]
    vocabs = [
        train_wordpiece(texts, 5000, 1, lowercase=False, max_length=32).get_vocab()
        for _ in range(4)
    ]
    assert all(v == vocabs[0] for v in vocabs[1:])
    by_id = sorted(vocabs[0], key=vocabs[0].get)
    assert by_id[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert by_id[5:] == sorted(by_id[5:])


def test_trained_wordpiece_is_cased_and_has_bert_specials(tokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(str(tmp_path))
    from emergent.models.backbone import load_tokenizer

    loaded = load_tokenizer(tmp_path)
    enc = loaded("New York")
    assert (
        enc["input_ids"][0] == loaded.cls_token_id and enc["input_ids"][-1] == loaded.sep_token_id
    )
    assert loaded.convert_ids_to_tokens(enc["input_ids"])[1] == "New"
    assert loaded.pad_token_id == 0 and loaded.mask_token == "[MASK]"


def test_masking_proportions_and_labels(tokenizer) -> None:
    """transformers' collator behind ours: 15% of non-special tokens, 80/10/10 split."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(
        len(tokenizer.all_special_ids), len(tokenizer), (64, 128), generator=generator
    )
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    masking = {"mlm_probability": 0.15, "mask_replace_prob": 0.8, "random_replace_prob": 0.1}
    batch = MaskingCollator(tokenizer, masking, seed=0)(list(ids))
    inputs, labels = batch["input_ids"], batch["labels"]
    selected = labels.ne(-100)
    assert not selected[:, [0, -1]].any(), "special tokens must never be masked"
    assert selected.float().mean().item() == pytest.approx(0.15 * 126 / 128, abs=0.01)
    assert torch.equal(labels[selected], ids[selected])
    masked = inputs[selected].eq(tokenizer.mask_token_id).float().mean().item()
    unchanged = inputs[selected].eq(ids[selected]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03)
    assert unchanged == pytest.approx(0.1, abs=0.03)  # 10% kept (+ rare random hits)
    assert torch.equal(inputs[~selected], ids[~selected])
    assert batch["attention_mask"].all()


def test_collator_trims_padding_and_masks_no_pad(tokenizer) -> None:
    blocks = pack_blocks(tokenizer, TEXTS[:3], block_size=64)
    batch = MaskingCollator(tokenizer, {"mlm_probability": 0.9}, seed=0)(list(blocks))
    lengths = blocks.ne(tokenizer.pad_token_id).sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max())
    assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
    assert not batch["labels"][batch["attention_mask"].eq(0)].ne(-100).any()


def test_pack_blocks_and_collator(tokenizer) -> None:
    blocks = pack_blocks(tokenizer, TEXTS, block_size=16)
    assert blocks.shape[1] == 16
    assert (blocks[:, 0] == tokenizer.cls_token_id).all()
    assert blocks[0, -1] == tokenizer.sep_token_id
    batch = MaskingCollator(tokenizer, {"mlm_probability": 0.5}, seed=1)(list(blocks[:4]))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 16)
    assert batch["labels"].ne(-100).any()


def test_masked_positions_loss_equals_full_vocabulary_loss(tokenizer) -> None:
    torch.manual_seed(0)
    model = tiny_mlm(len(tokenizer), hidden_size=32, num_hidden_layers=2).eval()
    blocks = pack_blocks(tokenizer, TEXTS, block_size=16)
    batch = MaskingCollator(tokenizer, {"mlm_probability": 0.3}, seed=3)(list(blocks[:6]))
    ours, stats = masked_lm_loss(model, batch)
    reference = model(**batch).loss
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    assert stats["count"] == int(batch["labels"].ne(-100).sum())


def test_param_groups_exclude_bias_and_layernorm() -> None:
    model = tiny_mlm(50)
    groups = param_groups(model.named_parameters(), weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for p in groups[1]["params"]]
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1
    assert all(n.endswith("bias") or "LayerNorm" in n for n in no_decay)
    assert any("LayerNorm.weight" in n for n in no_decay)


def test_linear_warmup_then_decay() -> None:
    """transformers' linear schedule: 0 -> peak over the warmup steps, then linear to 0."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_decay(opt, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert lrs[-1] == pytest.approx(0.125) and lrs[2:] == sorted(lrs[2:], reverse=True)


def test_mlm_head_is_tied_and_only_transform_and_bias_are_new(tokenizer) -> None:
    model = tiny_mlm(len(tokenizer), tie_word_embeddings=False)
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    tie_decoder(model)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    names = head_parameter_names(model) - {"cls.predictions.decoder.bias"}  # untied config
    assert "cls.predictions.decoder.weight" not in head_parameter_names(model)
    assert names == {
        "cls.predictions.bias",
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
    }


def test_output_bias_starts_at_log_unigram_frequencies(tokenizer) -> None:
    model = tiny_mlm(len(tokenizer))
    blocks = pack_blocks(tokenizer, TEXTS, block_size=16)
    init_output_bias(model, blocks, tokenizer.all_special_ids)
    bias = model.get_output_embeddings().bias
    counts = torch.bincount(blocks.flatten(), minlength=len(tokenizer)).float()
    frequent = int(counts[len(tokenizer.all_special_ids) :].argmax()) + len(
        tokenizer.all_special_ids
    )
    assert int(bias.argmax()) == frequent
    assert float(bias.exp().sum()) == pytest.approx(1.0, abs=1e-4)
    assert float(bias[tokenizer.pad_token_id]) == pytest.approx(float(bias.min()))


def test_set_dropout_makes_training_deterministic_and_leaves_the_config(tokenizer) -> None:
    model = tiny_mlm(len(tokenizer), hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    model.train()
    batch = {"input_ids": torch.tensor([[2, 7, 8, 9, 3]]), "attention_mask": torch.ones(1, 5)}
    torch.manual_seed(0)
    noisy = [model(**batch).logits for _ in range(2)]
    assert not torch.allclose(noisy[0], noisy[1]), "dropout 0.5 in train mode varies"
    set_dropout(model, 0.0)
    quiet = [model(**batch).logits for _ in range(2)]
    assert torch.equal(quiet[0], quiet[1])
    assert torch.allclose(quiet[0], model.eval()(**batch).logits, atol=1e-6)
    assert model.config.hidden_dropout_prob == 0.5
    assert model.config.attention_probs_dropout_prob == 0.5
