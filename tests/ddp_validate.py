"""Validate a saved task model with N processes; rank 0 writes the logged metrics as JSON.

`python tests/ddp_validate.py <project> <task> <model_dir> <devices> <out.json>`
(a script, not a test: Lightning's DDP launcher re-runs this command for each process).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L

from emergent.config import compose
from emergent.data.batches import TaskDataModule
from emergent.models.backbone import load_tokenizer
from emergent.models.classifier import TaskModule
from emergent.tasks import get_task


def main() -> None:
    project, task_name, model_dir, devices, out = sys.argv[1:6]
    cfg = compose(["experiment=smoke"], Path(__file__).resolve().parents[1] / "conf")
    task = get_task(cfg, task_name)
    tokenizer = load_tokenizer(Path(model_dir))
    labels = json.loads((Path(model_dir) / "labels.json").read_text())
    data = TaskDataModule(task, Path(project) / "data/prepared", tokenizer, 4, 64, labels=labels)
    model = task.model_class().from_pretrained(model_dir)
    module = TaskModule(
        model,
        task,
        labels,
        {"_target_": "torch.optim.AdamW"},
        {"_target_": "transformers.get_constant_schedule"},
        1e-3,
        0.0,
        0.0,
        1,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=int(devices),
        strategy="ddp" if int(devices) > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["world_size"] = trainer.world_size
        metrics["scored_rows"] = len(module.last_scored_rows)
        metrics["validation_rows"] = len(data.encoded["validation"])
        Path(out).write_text(json.dumps(metrics))


if __name__ == "__main__":
    main()
