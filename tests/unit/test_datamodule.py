"""Length-grouped training batches and length-sorted evaluation batches cut padding."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

from emergent.data.batches import TaskDataModule
from emergent.io import write_jsonl
from emergent.models.backbone import train_wordpiece
from tests.unit.test_tasks import SENT

WORDS = [
    "the",
    "film",
    "was",
    "good",
    "bad",
    "long",
    "short",
    "funny",
    "dull",
    "bright",
    "dark",
    "moving",
]


def padding_share(loader) -> float:
    real = total = 0
    for batch in loader:
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / total


def test_grouping_by_length_cuts_padding(tmp_path: Path) -> None:
    """800 texts of 1-60 words: shuffled batches of 16 waste about half their positions on
    padding; length-grouped ones waste under 10% and still visit every row once. transformers'
    own order runs long to short within each megabatch (12 batches here); ours shuffles the
    batches, so lengths rise about as often as they fall from one batch to the next."""
    rng = random.Random(0)
    for split, n in (("train", 800), ("validation", 200), ("test", 10)):
        rows = [
            {
                "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))),
                "label": rng.choice(["neg", "pos"]),
            }
            for _ in range(n)
        ]
        write_jsonl(tmp_path / "sentiment" / f"{split}.jsonl", rows)
    tokenizer = train_wordpiece(WORDS * 3, 200, 1, lowercase=True, max_length=128)
    shares, rises = {}, {}
    for grouped, shuffled in ((False, False), (True, False), (True, True)):
        data = TaskDataModule(
            SENT,
            tmp_path,
            tokenizer,
            16,
            128,
            group_by_length=grouped,
            shuffle_batches=shuffled,
            seed=3,
        )
        shares[grouped, shuffled] = padding_share(data.train_dataloader())
        batches = list(data.train_dataloader())
        seen = [r for batch in batches for r in batch["row"].tolist()]
        assert sorted(seen) == list(range(800)), "every row once per epoch"
        widths = [batch["input_ids"].shape[1] for batch in batches]
        rises[grouped, shuffled] = sum(b > a for a, b in pairwise(widths))
    assert shares[False, False] > 0.3, shares
    assert shares[True, False] < 0.1 and shares[True, True] < 0.1, shares
    assert rises[True, False] <= 5 and rises[True, True] >= 15, rises  # of 49 steps
    assert padding_share(data.val_dataloader()) < 0.1
