"""An export package (`models/export/<task>/`): its file names, the names of the model variants
it is measured as, and `export.json` as one typed record (`ExportInfo`, with its `ParityReport`).

The export stage writes the package; the service, the registry gate and the benchmarks read it.
One class with the file name, the fields and their order keeps writers and readers agreeing (the
file holds the same keys and values as the dict it replaces: packages already exported load).
It lives in `serving`, the lowest layer that both the export and the service may import, and
needs neither torch nor ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter

from emergent.errors import StageError
from emergent.io import read_record, write_json

# The model an export package serves; export, serving and the benchmarks name it from here.
MODEL_FILE = "model.int8.onnx"
# Its fp32 reference (what the int8 model is quantized from).
FP32_MODEL_FILE = "model.onnx"
EXPORT_FILE = "export.json"

# Files a reader refuses with one line: unknown keys, missing keys and wrong types alike (an
# int where a float is expected is a float; a bool is not a number).
_STRICT = ConfigDict(extra="forbid", strict=True)


class Variant(StrEnum):
    """The forms of a task model the export measures side by side (the keys of `variants` in
    `export.json` and of `metrics/export_<task>.json`); a member is its own JSON string."""

    FP32_TORCH = "fp32_torch"  # the fine-tuned model, PyTorch eager
    FP32_ONNX = "fp32_onnx"  # the exported (possibly pruned) model, fused ONNX
    INT8_ONNX = "int8_onnx"  # the same, quantized: the model that ships


@dataclass
class ParityReport:
    """How far the package is from the fine-tuned model, and the gate's settings: fp32 ONNX
    logits off PyTorch, the int8 drop on test (reported) and on validation (judged), in points,
    each with its paired bootstrap interval `[low, high]`."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    max_abs_logit_diff: float
    atol: float
    int8_drop: float
    int8_drop_ci: list[float]
    int8_val_drop: float
    int8_val_drop_ci: list[float]
    max_metric_drop: float
    drop_gate: str
    per_channel: bool
    threads: int  # the CPU threads the timings ran on


@dataclass
class ExportInfo:
    """`export.json`: what the service needs to rebuild the task and encode text (task_spec,
    pad_token_id, max_length), the export settings, and the figures behind the model card
    (the metrics file keeps headline figures only)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    task: str
    # the server rebuilds the task from it, with what the model learned (model_spec)
    task_spec: dict[str, Any]
    pad_token_id: int
    max_length: int
    opset: int
    per_channel: bool
    metric_name: str
    seq_length: int
    device: dict[str, Any]  # what the timings ran on (torch and ORT on the CPU)
    variants: dict[str, dict[str, float]]  # per Variant: metric, size, latency, throughput
    parity: ParityReport
    ratios: dict[str, float]
    pruning: dict[str, Any] | None

    def save(self, folder: Path) -> Path:
        """Write `folder/export.json` atomically; returns its path."""
        path = Path(folder) / EXPORT_FILE
        write_json(path, dataclasses.asdict(self))
        return path

    @classmethod
    def load(cls, folder: Path) -> ExportInfo:
        """The package's export.json, or one line naming the file and its first bad field."""
        path = Path(folder) / EXPORT_FILE
        if not path.is_file():
            raise StageError(f"{folder} is not an export package: run export@<task> first")
        info = read_record(path, _ADAPTER, "an export.json", _AGAIN)
        missing = [name for name in Variant if name not in info.variants]
        if missing:
            raise StageError(f"{path}: field variants.{missing[0]}: Field required; {_AGAIN}")
        return info

    def logged(self) -> dict[str, Any]:
        """The figures the export run logs to MLflow (nested: `tracking` flattens them)."""
        return {
            **self.variants,
            "metric_name": self.metric_name,
            "seq_length": self.seq_length,
            "device": self.device,
            "parity": dataclasses.asdict(self.parity),
            "pruning": self.pruning,
            "ratios": self.ratios,
        }


_ADAPTER = TypeAdapter(ExportInfo)
_AGAIN = "run the export stage again"
