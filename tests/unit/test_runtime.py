"""The runtime runs the graph the export wrote: ONNX Runtime fuses a residual Add and its
LayerNorm into SkipLayerNormalization on load unless told not to (its CPU kernel is 4.7x
slower, docs/results.md), and it accepts an unknown optimizer name silently, so a renamed
fusion would only show here."""

from __future__ import annotations

from pathlib import Path

from scripts.layernorm_measure import operator_graph

from emergent.serving.runtime import op_counts, session_ops


def test_a_session_keeps_add_and_layernorm_apart(tmp_path: Path) -> None:
    import onnxruntime as ort

    graph = tmp_path / "add_layernorm.onnx"
    graph.write_bytes(operator_graph(fused=False, hidden=8))
    # what ONNX Runtime makes of it by itself: the fusion this test guards against
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "plain.onnx")
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    assert op_counts(options.optimized_model_filepath) == {"SkipLayerNormalization": 1}
    assert session_ops(graph) == {"Add": 1, "LayerNormalization": 1}
