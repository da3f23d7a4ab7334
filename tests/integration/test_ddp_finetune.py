"""DDP-correct fine-tuning metrics: two processes score the whole validation set, exactly as
one process does on the same weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cmd

pytestmark = pytest.mark.integration


# Two processes with gloo (~40 s): CI runs it; `make test` keeps under 10 minutes.
@pytest.mark.slow
def test_two_processes_report_the_same_validation_metrics(
    smoke_pretrained: Path, tmp_path: Path
) -> None:
    import torch

    from emergent.config import compose
    from emergent.models.classifier import load_task_model
    from emergent.tasks import get_task

    task = get_task(compose(["experiment=smoke"], ROOT / "conf"), "debate")
    examples = [
        json.loads(line)
        for line in (smoke_pretrained / "data/prepared/debate/train.jsonl").read_text().splitlines()
    ]
    labels = task.labels(examples)
    torch.manual_seed(0)
    model = load_task_model(task, str(smoke_pretrained / "models/pretrained"), labels, {})
    model_dir = tmp_path / "model"
    model.save_pretrained(str(model_dir))
    (model_dir / "labels.json").write_text(json.dumps(labels))
    from emergent.models.backbone import load_tokenizer

    load_tokenizer(smoke_pretrained / "models/pretrained").save_pretrained(str(model_dir))

    results = {}
    for devices in (1, 2):
        out = tmp_path / f"metrics{devices}.json"
        script = [sys.executable, str(ROOT / "tests/ddp_validate.py")]
        args = [str(smoke_pretrained), "debate", str(model_dir), str(devices), str(out)]
        proc = run_cmd([*script, *args], cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.loads(out.read_text())
    one, two = results[1], results[2]
    assert two["world_size"] == 2
    assert one["scored_rows"] == two["scored_rows"] == one["validation_rows"] > 2
    for key in ("val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro"):
        assert two[key] == pytest.approx(one[key]), key
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=0.05)
