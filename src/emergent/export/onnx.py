"""ONNX export with dynamic batch and sequence axes (sessions: `emergent.serving.runtime`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask")


class LogitsOnly(torch.nn.Module):
    """(input_ids, attention_mask) -> logits: the exported graph's whole interface."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model: Any, path: Path, opset: int = 18, seq_length: int = 16) -> Path:
    """Export with torch.onnx.export (dynamo) into a single file (no external data)."""
    model = model.eval()
    ids = torch.randint(5, 100, (2, seq_length))
    mask = torch.ones_like(ids)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dims = {0: batch, 1: seq}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            LogitsOnly(model),
            (ids, mask),
            str(path),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path
