"""Loading a fine-tuned task model for inference (evaluate, export, seeds, benchmarks).

Apart from `models/classifier.py` (the Lightning module that trains it) so that a stage that
only loads and scores a model never imports Lightning and torchmetrics at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emergent.errors import StageError
from emergent.tasks import Task


def load_finetuned(task: Task, model_dir: Path | str) -> tuple[Any, Any, list[str]]:
    """A fine-tuned task model (eval mode), its tokenizer and its labels from `models/{task}/`."""
    from transformers import AutoConfig

    from emergent.models.backbone import load_tokenizer
    from emergent.models.pooling import pooled_class

    model_dir = Path(model_dir)
    if not (model_dir / "labels.json").is_file():
        raise StageError(f"{model_dir} has no fine-tuned model: run finetune@{task.name} first")
    labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    cls = pooled_class(task.model_class(), AutoConfig.from_pretrained(str(model_dir)))
    model = cls.from_pretrained(str(model_dir)).eval()
    return model, load_tokenizer(model_dir), labels
