"""MLM data: the corpus packed into fixed-size blocks, with BERT-style dynamic masking."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypedDict

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from emergent.data.layout import corpus_path, read_corpus
from emergent.schema import PretrainConfig, Settings

log = logging.getLogger(__name__)


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


class MaskingSettings(TypedDict, total=False):
    """`DataCollatorForLanguageModeling`'s masking keywords (any left out keep its defaults)."""

    mlm_probability: float
    mask_replace_prob: float
    random_replace_prob: float


def masking_settings(pretrain_cfg: PretrainConfig) -> MaskingSettings:
    """The masking keys of `pretrain` (what `DataCollatorForLanguageModeling` takes)."""
    return {
        "mlm_probability": pretrain_cfg.mlm_probability,
        "mask_replace_prob": pretrain_cfg.mask_replace_prob,
        "random_replace_prob": pretrain_cfg.random_replace_prob,
    }


class BlockDataset(Dataset):
    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.blocks[index]


class MaskingCollator:
    """Dynamic padding (trim to the longest block) and fresh BERT-style masking per batch.

    The masking itself is transformers' `DataCollatorForLanguageModeling`: of the non-special
    tokens it selects `mlm_probability`, replaces `mask_replace_prob` of those with [MASK] and
    `random_replace_prob` with a random token, and labels only the selected positions.
    """

    def __init__(self, tokenizer: Any, masking: MaskingSettings, seed: int | None = None) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.pad_id = tokenizer.pad_token_id
        self.collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, seed=seed, return_tensors="pt", **masking
        )

    def __call__(self, rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        # Blocks are right-padded: hand the collator each block without its padding, it pads
        # to the longest one and builds the attention mask.
        lengths = [int(row.ne(self.pad_id).sum()) for row in rows]
        out = self.collator(
            [{"input_ids": row[:n].tolist()} for row, n in zip(rows, lengths, strict=True)]
        )
        return {
            "input_ids": out["input_ids"],
            "attention_mask": out["attention_mask"].long(),
            "labels": out["labels"],
        }


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
        masking: MaskingSettings,
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
        # torch types `dataset` as a Dataset; a list is a map-style one
        return DataLoader(self.val_batches, batch_size=None, shuffle=False)  # type: ignore[arg-type]


def mlm_datamodule(settings: Settings, prepared: Path, tokenizer: Any) -> MLMDataModule:
    """The corpus of `prepared` as `pretrain` configures it (block size capped at the model's
    `max_length`), set up for fitting (its blocks packed)."""
    pcfg = settings.pretrain
    datamodule = MLMDataModule(
        corpus_path(prepared, "train").parent,
        tokenizer,
        block_size=min(pcfg.block_size, settings.model.max_length),
        batch_size=pcfg.batch_size,
        masking=masking_settings(pcfg),
        seed=settings.seed,
        num_workers=pcfg.num_workers,
        max_train_blocks=pcfg.max_train_blocks,
    )
    datamodule.setup("fit")
    return datamodule
