"""int8 dynamic quantization with onnxruntime.quantization (weights int8, activations
quantized on the fly). Embedding lookups (Gather) are quantized too: in a small BERT they are
half of the weights, and leaving them fp32 caps the size reduction near 2x."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

OP_TYPES = ["MatMul", "Gemm", "Gather"]


def quantize(src: Path, dst: Path, per_channel: bool) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        op_types_to_quantize=OP_TYPES,
    )
    return dst
