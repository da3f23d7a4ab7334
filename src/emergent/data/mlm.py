"""MLM data: the corpus packed into fixed-size blocks, with BERT-style dynamic masking."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)


def read_corpus(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the ingest stage first")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pack_blocks(tokenizer: Any, texts: list[str], block_size: int) -> torch.Tensor:
    """Tokenize, concatenate with [SEP] between documents, cut into `[CLS] ... [SEP]` blocks.

    Packing wastes no compute on padding; every block but the last is full.
    """
    inner = block_size - 2
    ids: list[int] = []
    encoded = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, verbose=False
    )["input_ids"]
    for doc in encoded:
        ids.extend(doc)
        ids.append(tokenizer.sep_token_id)
    blocks = [
        [tokenizer.cls_token_id, *ids[start : start + inner], tokenizer.sep_token_id]
        for start in range(0, max(len(ids) - inner // 4, 1), inner)
    ]
    width = max(len(b) for b in blocks)
    out = torch.full((len(blocks), width), tokenizer.pad_token_id, dtype=torch.long)
    for row, block in enumerate(blocks):
        out[row, : len(block)] = torch.tensor(block)
    return out


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select `mlm_probability` of the non-special tokens; of those, replace `mask_replace_prob`
    with [MASK], `random_replace_prob` with a random token, and keep the rest. Labels are -100
    everywhere except at selected positions."""
    inputs = input_ids.clone()
    labels = input_ids.clone()
    probs = torch.full(inputs.shape, mlm_probability)
    probs.masked_fill_(special_mask, 0.0)
    selected = torch.bernoulli(probs, generator=generator).bool()
    labels[~selected] = -100
    draw = torch.rand(inputs.shape, generator=generator)
    to_mask = selected & (draw < mask_replace_prob)
    to_random = (
        selected & (draw >= mask_replace_prob) & (draw < mask_replace_prob + random_replace_prob)
    )
    inputs[to_mask] = mask_token_id
    random_tokens = torch.randint(vocab_size, inputs.shape, generator=generator)
    inputs[to_random] = random_tokens[to_random]
    return inputs, labels


class BlockDataset(Dataset):
    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.blocks[index]


class MaskingCollator:
    """Dynamic padding (trim to the longest block) and fresh masking per batch."""

    def __init__(self, tokenizer: Any, masking: dict[str, float], seed: int | None = None) -> None:
        self.pad_id = tokenizer.pad_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.masking = masking
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = torch.stack(rows)
        attention = batch.ne(self.pad_id)
        width = int(attention.sum(1).max())
        batch, attention = batch[:, :width], attention[:, :width]
        special = torch.isin(batch, self.special_ids)
        inputs, labels = mask_tokens(
            batch, special, self.mask_id, self.vocab_size, generator=self.generator, **self.masking
        )
        return {"input_ids": inputs, "attention_mask": attention.long(), "labels": labels}


class MLMDataModule(L.LightningDataModule):
    """Train/validation blocks from `corpus/{train,validation}.txt`.

    Validation batches are masked once with a fixed seed, so validation loss is comparable
    across evaluations and runs.
    """

    def __init__(
        self,
        corpus_dir: Path,
        tokenizer: Any,
        block_size: int,
        batch_size: int,
        masking: dict[str, float],
        seed: int = 42,
        num_workers: int = 0,
        max_train_blocks: int | None = None,
    ) -> None:
        super().__init__()
        self.corpus_dir = Path(corpus_dir)
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.batch_size = batch_size
        self.masking = masking
        self.seed = seed
        self.num_workers = num_workers
        self.max_train_blocks = max_train_blocks
        self.train_blocks: torch.Tensor | None = None
        self.val_batches: list[dict[str, torch.Tensor]] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_blocks is not None:
            return
        train = pack_blocks(
            self.tokenizer, read_corpus(self.corpus_dir / "train.txt"), self.block_size
        )
        if self.max_train_blocks:
            train = train[: int(self.max_train_blocks)]
        self.train_blocks = train
        val = pack_blocks(
            self.tokenizer, read_corpus(self.corpus_dir / "validation.txt"), self.block_size
        )
        collate = MaskingCollator(self.tokenizer, self.masking, seed=self.seed)
        self.val_batches = [
            collate(list(val[i : i + self.batch_size])) for i in range(0, len(val), self.batch_size)
        ]
        log.info("MLM blocks: %d train, %d validation", len(train), len(val))

    def train_dataloader(self) -> DataLoader:
        assert self.train_blocks is not None
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            BlockDataset(self.train_blocks),
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=MaskingCollator(self.tokenizer, self.masking),
            num_workers=self.num_workers,
            drop_last=len(self.train_blocks) >= self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_batches, batch_size=None, shuffle=False)
