"""A fused AdamW (`finetune.<task>.optimizer.fused`) under bf16-mixed still gets its gradients
clipped; under an fp16 loss scaler the module falls back to the unfused loop."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from transformers import BertForSequenceClassification

from emergent.models.classifier import TaskModule
from tests.helpers import tiny_bert_config

OPTIMIZER = {"_target_": "torch.optim.AdamW", "fused": True}
SCHEDULER = {"_target_": "transformers.get_linear_schedule_with_warmup"}
BATCH = {
    "input_ids": torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    "labels": torch.tensor([0, 1]),
}


def _module(trainer: L.Trainer) -> TaskModule:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    module = TaskModule(
        model,
        None,  # type: ignore[arg-type]  # the task is only read by validation
        ["negative", "positive"],
        optimizer=OPTIMIZER,
        scheduler=SCHEDULER,
        lr=1e-3,
        weight_decay=0.01,
        warmup_ratio=0.0,
        total_steps=10,
    )
    module.trainer = trainer
    return module


def _grad_norm(module: TaskModule) -> float:
    return float(
        torch.nn.utils.get_total_norm(p.grad for p in module.parameters() if p.grad is not None)
    )


def test_fused_adamw_under_bf16_clips_to_the_configured_norm() -> None:
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False)
    module = _module(trainer)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True
    module.loss(module(BATCH), BATCH["labels"]).backward()
    assert _grad_norm(module) > 0.05
    # Lightning's own mixed-precision hook raises for a fused optimizer here.
    module.configure_gradient_clipping(optimizer, 0.05, None)
    assert _grad_norm(module) == pytest.approx(0.05, rel=1e-3)


def test_an_fp16_loss_scaler_gets_the_unfused_optimizer() -> None:
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = L.Trainer(accelerator="cpu", plugins=[scaled], logger=False)
    optimizer = _module(trainer).configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is False
