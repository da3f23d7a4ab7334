"""ONNX export with dynamic batch and sequence axes, operator fusion for ONNX Runtime, and ONNX
Runtime forward functions.

Why the TorchScript exporter: ONNX Runtime's BERT fusion (Attention, EmbedLayerNormalization,
BiasGelu and, when asked, SkipLayerNormalization) recognises the graph TorchScript emits for
eager attention.
The dynamo exporter's graph for transformers 5 (boolean mask building, SDPA) fuses only
LayerNorm/Gelu; onnxscript's rewriter fuses its attention into an `Attention` with an additive
bias and `qkv_hidden_sizes`, which the int8 quantizer cannot turn into QAttention. With the
fused graph every attention block becomes one QAttention after dynamic quantization.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from emergent.logfilters import DropMessage
from emergent.serving.runtime import op_counts
from emergent.tasks.shapes import INPUT, N_SHAPES, uses_shapes

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask")
FUSED_OPS = (
    "Attention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "Gelu",
)


class LogitsOnly(torch.nn.Module):
    """(input_ids, attention_mask) -> logits: the exported graph's whole interface."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


# (message regex, module regex) of the TorchScript exporter's warnings on transformers' code.
EXPORT_WARNINGS = (
    (
        r"Converting a tensor to a Python boolean might cause the trace to be incorrect",
        r"transformers\.masking_utils",
    ),
    (
        r"Exporting aten::index operator of advanced indexing",
        r"torch\.onnx\._internal\.torchscript_exporter\.symbolic_opset11",
    ),
)


@contextmanager
def vendor_info_off() -> Iterator[None]:
    """INFO records off while ONNX Runtime's tools run: they log every fusion and every tensor
    (module-named and root loggers alike); warnings and errors still show."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


class LogitsWithShapes(LogitsOnly):
    """(input_ids, attention_mask, word_shape_ids) -> logits, for a model reading word shapes
    (they enter as token-type ids, so the graph stays the BERT graph ORT fuses)."""

    def forward(  # type: ignore[override]
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_shape_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=word_shape_ids
        ).logits


def export_onnx(model: Any, path: Path, opset: int = 17, seq_length: int = 16) -> Path:
    """Export with the TorchScript exporter and eager attention into a single file.

    The model is copied so the caller's attention implementation is left alone.
    """
    model = copy.deepcopy(model).eval()
    model.set_attn_implementation("eager")
    ids = torch.randint(5, 100, (2, seq_length))
    mask = torch.ones_like(ids)
    axes = {0: "batch", 1: "sequence"}
    args: tuple[torch.Tensor, ...] = (ids, mask)
    wrapper, names = LogitsOnly(model), list(INPUTS)
    if uses_shapes(model.config):
        shapes = torch.randint(0, N_SHAPES, (2, seq_length))
        wrapper, args, names = LogitsWithShapes(model), (ids, mask, shapes), [*INPUTS, INPUT]
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on code we do not own and cannot change; the parity gate checks
        # the exported graph against the model instead.
        for message, module in EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, module=module)
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**dict.fromkeys(names, axes), "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
            external_data=False,
        )
    return path


def fuse(src: Path, dst: Path, config: Any, skip_layer_norm: bool = False) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer (BERT fusions) from `src` into `dst`.

    Heads and hidden size come from the model: after head pruning the attention width
    (heads x head size) is smaller than the hidden size. `skip_layer_norm` (the
    `export.skip_layer_norm` key) folds each residual Add into its LayerNormalization as one
    SkipLayerNormalization; off, they stay two operators, which ONNX Runtime's CPU kernels
    run faster (why: conf/export/default.yaml). Returns the fused-operator counts.
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm

    head_size = config.hidden_size // config.num_attention_heads
    heads = int(getattr(config, "emergent_attention_heads", config.num_attention_heads))
    # After head pruning the attention width we pass is narrower than the q/k/v inputs on
    # purpose; ORT warns about that on every layer and fuses correctly (the parity gate checks).
    width_note = DropMessage("Input hidden size")
    logging.getLogger("fusion_attention").addFilter(width_note)
    try:
        with vendor_info_off():  # ~20 INFO lines per graph; the counts below say what matters
            optimized = optimizer.optimize_model(
                str(src),
                model_type="bert",
                num_heads=heads,
                hidden_size=heads * head_size,
                opt_level=0,  # fusions only: graph optimizations happen when the session loads
                optimization_options=options,
            )
            optimized.save_model_to_file(str(dst))
    finally:
        logging.getLogger("fusion_attention").removeFilter(width_note)
    counts = op_counts(dst)
    log.info("operators after fusion: %s", {op: counts.get(op, 0) for op in FUSED_OPS})
    return counts
