"""Behaviour: fine-tuning learns. On a small learnable data set (the label is given by one
word) the smoke model must beat the majority-class baseline by a wide margin."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from emergent.config import Paths
from emergent.io import write_jsonl
from emergent.stages import run_stage
from tests.conftest import smoke_cfg

# Fine-tunes on the session's pretrained smoke model.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

FILLER = [
    "the",
    "film",
    "was",
    "a",
    "story",
    "about",
    "people",
    "and",
    "time",
    "in",
    "a",
    "city",
    "with",
    "music",
]


def learnable_split(rng: random.Random, n: int) -> list[dict]:
    """60% positive ("good ..."), 40% negative ("bad ..."): majority baseline 0.6."""
    rows = []
    for i in range(n):
        positive = i % 5 < 3
        words = rng.sample(FILLER, 6)
        words.insert(rng.randrange(7), "good" if positive else "bad")
        rows.append({"text": " ".join(words), "label": "positive" if positive else "negative"})
    return rows


def test_finetune_beats_the_majority_baseline(smoke_pretrained: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    for split, n in (("train", 240), ("validation", 40), ("test", 100)):
        write_jsonl(
            tmp_path / "data/prepared/sentiment" / f"{split}.jsonl", learnable_split(rng, n)
        )
    (tmp_path / "models").mkdir()
    (tmp_path / "models/pretrained").symlink_to(smoke_pretrained / "models/pretrained")
    cfg = smoke_cfg(
        "finetune.shared.limit_train_batches=null",
        "finetune.sentiment.max_epochs=10",
        "finetune.sentiment.lr=3e-3",
        "finetune.sentiment.batch_size=16",
        "finetune.shared.callbacks.early_stopping.patience=10",
    )
    paths = Paths.for_dvc(tmp_path)
    run_stage("finetune", cfg, paths, task="sentiment")
    run_stage("evaluate", cfg, paths, task="sentiment")
    metrics = json.loads((tmp_path / "metrics/sentiment.json").read_text())
    assert metrics["accuracy"] >= 0.85, metrics  # majority baseline: 0.60
