"""Fine-tuning data for both tasks: encoding, label alignment, padding and the DataModule.

NER labels are aligned to sub-words as in HF `run_ner.py`: the first sub-token of a word
carries the word's label and the rest are ignored (-100), or with `label_all_tokens` every
sub-token gets the label (B- turned into I- after the first).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from emergent.data.prepare import SPLITS, load_task_split

IGNORE = -100


def label_list(task: str, examples: Sequence[dict]) -> list[str]:
    """The label set from the data: sorted, with `O` first for NER."""
    if task == "ner":
        tags = {t for e in examples for t in e["tags"]}
        types = sorted({t[2:] for t in tags if t != "O"})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    return sorted({str(e["label"]) for e in examples})


def encode_ner(
    tokenizer: Any,
    example: dict,
    label2id: dict[str, int],
    max_length: int,
    label_all_tokens: bool = False,
) -> dict[str, list[int]]:
    enc = tokenizer(
        example["tokens"], is_split_into_words=True, truncation=True, max_length=max_length
    )
    labels, first, previous = [], [], None
    for word in enc.word_ids():
        first.append(int(word is not None and word != previous))
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(label2id[example["tags"][word]])
        elif label_all_tokens:
            tag = example["tags"][word]
            tag = "I-" + tag[2:] if tag.startswith("B-") and "I-" + tag[2:] in label2id else tag
            labels.append(label2id[tag])
        else:
            labels.append(IGNORE)
        previous = word
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": labels,
        "first": first,
    }


def encode_text(
    tokenizer: Any, example: dict, label2id: dict[str, int], max_length: int
) -> dict[str, Any]:
    enc = tokenizer(example["text"], truncation=True, max_length=max_length)
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": label2id[str(example["label"])],
    }


def encode(
    task: str,
    tokenizer: Any,
    examples: Sequence[dict],
    label2id: dict[str, int],
    max_length: int,
    label_all_tokens: bool = False,
) -> list[dict]:
    if task == "ner":
        return [encode_ner(tokenizer, e, label2id, max_length, label_all_tokens) for e in examples]
    return [encode_text(tokenizer, e, label2id, max_length) for e in examples]


def pad_batch(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest row; token labels are padded with -100."""
    width = max(len(r["input_ids"]) for r in rows)
    batch = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
    }
    token_labels = isinstance(rows[0]["labels"], list)
    labels = (
        torch.full((len(rows), width), IGNORE, dtype=torch.long)
        if token_labels
        else torch.tensor([r["labels"] for r in rows], dtype=torch.long)
    )
    if "first" in rows[0]:
        batch["first"] = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(row["input_ids"])
        batch["attention_mask"][i, :n] = 1
        if token_labels:
            labels[i, :n] = torch.tensor(row["labels"])
        if "first" in row:
            batch["first"][i, :n] = torch.tensor(row["first"])
    batch["labels"] = labels
    return batch


class Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(rows, self.pad_id)


class TaskDataModule(L.LightningDataModule):
    """Prepared splits of one task, encoded once; the label set comes from the train split."""

    def __init__(
        self,
        task: str,
        prepared_dir: Path,
        tokenizer: Any,
        batch_size: int,
        max_length: int,
        label_all_tokens: bool = False,
        labels: list[str] | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.task = task
        self.prepared_dir = Path(prepared_dir)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.label_all_tokens = label_all_tokens
        self.num_workers = num_workers
        self.seed = seed
        self.raw = {s: load_task_split(self.prepared_dir, task, s) for s in SPLITS}
        self.labels = labels or label_list(task, self.raw["train"] + self.raw["validation"])
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.encoded: dict[str, list[dict]] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.encoded:
            self.encoded = {
                s: encode(
                    self.task,
                    self.tokenizer,
                    rows,
                    self.label2id,
                    self.max_length,
                    self.label_all_tokens,
                )
                for s, rows in self.raw.items()
            }

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        self.setup()
        return DataLoader(
            self.encoded[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            collate_fn=Collator(self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights over train labels (sentiment imbalance)."""
        counts = torch.zeros(len(self.labels))
        for row in self.encoded["train"]:
            counts[row["labels"]] += 1
        return counts.sum() / (len(self.labels) * counts.clamp(min=1))
