"""Fine-tuning data of one task: encoded once, length-grouped training batches, length-sorted
evaluation batches (the task decides how examples encode and pad)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from emergent.data.layout import SPLITS, load_task_split
from emergent.data.protocols import EncodedTask, Row
from emergent.schema import FinetuneShared


class ShuffledGroupsSampler(Sampler[int]):
    """transformers' `LengthGroupedSampler` batches (similar lengths: little padding), served
    in random order.

    That sampler sorts each megabatch of 50 batches longest first, so an epoch walks from long
    to short texts about six times over: with one epoch and a decaying learning rate
    (sentiment) that is a curriculum nobody chose, and the last steps see only the shortest
    texts. The batches keep their members; only their order is shuffled (the last, partial
    batch stays last, so every `batch_size` chunk remains one group).
    """

    def __init__(self, batch_size: int, lengths: list[int], generator: torch.Generator) -> None:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        self.grouped = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.grouped)

    def __iter__(self) -> Any:
        indices = list(self.grouped)
        full = len(indices) // self.batch_size * self.batch_size
        batches = [indices[i : i + self.batch_size] for i in range(0, full, self.batch_size)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([i for b in order for i in batches[b]] + indices[full:])


class TaskDataModule(L.LightningDataModule):
    """Prepared splits of one task; the label set comes from the train and validation splits.

    Every row carries `row` (its index in the split) so predictions gathered from several
    processes can be de-duplicated and put back in order.
    """

    def __init__(
        self,
        task: EncodedTask,
        prepared_dir: Path,
        tokenizer: Any,
        batch_size: int,
        max_length: int,
        label_all_tokens: bool = False,
        labels: list[str] | None = None,
        num_workers: int = 0,
        seed: int = 42,
        group_by_length: bool = True,
        shuffle_batches: bool = True,
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
        self.group_by_length = group_by_length
        self.shuffle_batches = shuffle_batches
        self.raw = {s: load_task_split(self.prepared_dir, task.name, s) for s in SPLITS}
        self.labels = labels or task.labels(self.raw["train"] + self.raw["validation"])
        self.encoded: dict[str, list[Row]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:
            return
        for split, examples in self.raw.items():
            rows = self.task.encode(
                self.tokenizer,
                examples,
                self.labels,
                self.max_length,
                unknown_labels="error" if split != "test" else "ignore",
                label_all_tokens=self.label_all_tokens,
            )
            for i, row in enumerate(rows):
                row["row"] = i
            self.encoded[split] = rows

    def lengths(self, split: str) -> list[int]:
        return [len(r["input_ids"]) for r in self.encoded[split]]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed)
        sampler: Any = None
        if self.group_by_length:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            grouped = ShuffledGroupsSampler if self.shuffle_batches else LengthGroupedSampler
            sampler = grouped(self.batch_size, lengths=self.lengths("train"), generator=generator)
        return DataLoader(
            # torch types `dataset` as a Dataset; a list is a map-style one
            self.encoded["train"],  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=sampler is None,
            generator=generator if sampler is None else None,
            collate_fn=self.task.collator(self.tokenizer),
            num_workers=self.num_workers,
        )

    def eval_loader(self, split: str) -> DataLoader:
        """Length-sorted rows: each batch pads only to its own longest row."""
        self.setup()
        rows = sorted(self.encoded[split], key=lambda r: len(r["input_ids"]))
        return DataLoader(
            # torch types `dataset` as a Dataset; a list is a map-style one
            rows,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.task.collator(self.tokenizer),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights over the train labels (tags or classes) for the loss."""
        self.setup()
        labels = torch.tensor(
            [
                label
                for row in self.encoded["train"]
                for label in (row["labels"] if isinstance(row["labels"], list) else [row["labels"]])
                if label >= 0
            ]
        )
        counts = torch.bincount(labels, minlength=len(self.labels)).float()
        return counts.sum() / (len(self.labels) * counts.clamp(min=1))


def task_datamodule(
    fcfg: FinetuneShared,
    task: EncodedTask,
    prepared: Path,
    tokenizer: Any,
    max_length: int,
    seed: int,
    labels: list[str] | None = None,
) -> Any:
    """The task's datamodule from `finetune.<task>.datamodule` (a Hydra target), set up:
    what the fine-tuning stage and export's recovery fine-tune train on.
    `labels`: the model's label list (a label it does not know is then an error)."""
    from hydra.utils import instantiate

    datamodule = instantiate(
        fcfg.datamodule.model_dump(by_alias=True),
        task=task,
        prepared_dir=prepared,
        tokenizer=tokenizer,
        batch_size=fcfg.batch_size,
        max_length=max_length,
        label_all_tokens=fcfg.label_all_tokens,
        labels=labels,
        seed=seed,
    )
    datamodule.setup()
    return datamodule
