"""int8 dynamic quantization with onnxruntime.quantization (weights int8, activations
quantized on the fly).

On the fused graph (see `emergent.export.onnx.fuse`) Attention becomes QAttention and
EmbedLayerNormalization becomes QEmbedLayerNormalization, so attention's projections run as one
int8 kernel instead of three separately quantized MatMuls. Embedding lookups are quantized too:
in a small BERT they are half of the weights, and leaving them fp32 caps the size reduction
near 2x.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

OP_TYPES = ["MatMul", "Gemm", "Gather", "Attention", "EmbedLayerNormalization"]


def quantize(
    src: Path,
    dst: Path,
    per_channel: bool,
    op_types: Sequence[str] = OP_TYPES,
    exclude: Sequence[str] = (),
) -> Path:
    """`src` quantized into `dst`: the `op_types` operators (the export's set by default), but
    for the nodes named in `exclude` (variants measured by scripts/qdq_measure.py)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from emergent.export.onnx import vendor_info_off
    from emergent.logfilters import DropMessage

    # The quantizer advises `quant_pre_process` (shape inference and ORT's optimizer) on every
    # call, on the root logger itself; the graph it gets is already fused (`onnx.fuse`).
    advice = DropMessage("Please consider to run pre-processing")
    logging.getLogger().addFilter(advice)
    try:
        with vendor_info_off():
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=list(op_types),
                nodes_to_exclude=list(exclude),
                # Outputs of contrib ops (Attention, EmbedLayerNormalization) have no inferred type:
                # they are float, which is what the quantizer needs to know.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        logging.getLogger().removeFilter(advice)
    return dst
