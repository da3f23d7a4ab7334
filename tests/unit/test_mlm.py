"""Masking, block packing, the masked-positions-only loss, optimizer groups and schedules."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from emergent.data.mlm import MaskingCollator, mask_tokens, pack_blocks
from emergent.models.backbone import train_wordpiece
from emergent.models.mlm import masked_lm_loss
from emergent.models.optim import linear_warmup_decay, param_groups

TEXTS = [
    "The quick brown fox jumps over the lazy dog .",
    "New York City is big and loud .",
    "Empire State Building = ESB .",
    "I love this movie , it is great fun .",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=120, min_frequency=1, lowercase=False, max_length=32)


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


def test_mask_tokens_proportions_and_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 128))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    inputs, labels = mask_tokens(
        ids, special, mask_token_id=4, vocab_size=1000, generator=generator
    )
    selected = labels.ne(-100)
    assert not selected[special].any(), "special tokens must never be masked"
    assert selected.float().mean().item() == pytest.approx(0.15 * 126 / 128, abs=0.01)
    assert torch.equal(labels[selected], ids[selected])
    masked = inputs[selected].eq(4).float().mean().item()
    unchanged = inputs[selected].eq(ids[selected]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03)
    assert unchanged == pytest.approx(0.1, abs=0.03)  # 10% kept (+ rare random hits)
    assert torch.equal(inputs[~selected], ids[~selected])


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
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = BertForMaskedLM(config).eval()
    blocks = pack_blocks(tokenizer, TEXTS, block_size=16)
    batch = MaskingCollator(tokenizer, {"mlm_probability": 0.3}, seed=3)(list(blocks[:6]))
    ours, stats = masked_lm_loss(model, batch)
    reference = model(**batch).loss
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    assert stats["count"] == int(batch["labels"].ne(-100).sum())


def test_param_groups_exclude_bias_and_layernorm() -> None:
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    groups = param_groups(model.named_parameters(), weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for p in groups[1]["params"]]
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1
    assert all(n.endswith("bias") or "LayerNorm" in n for n in no_decay)
    assert any("LayerNorm.weight" in n for n in no_decay)


def test_linear_warmup_then_decay() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_decay(opt, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[-1] == pytest.approx(0.125) and lrs == sorted(lrs[:2]) + sorted(
        lrs[2:], reverse=True
    )
