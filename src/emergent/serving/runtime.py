"""ONNX Runtime sessions and forward functions. Serving owns the runtime; export and the
benchmarks use it from here. Never imports torch, so a service stays small and starts fast."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Fusions the export decides offline (`export.skip_layer_norm`), which the session must not
# redo on load: a package exported with its residual Adds and LayerNorms apart keeps them apart.
EXPORT_DECIDES = ["SkipLayerNormFusion"]


def session(path: Path | str, threads: int | None = None, optimized_to: Path | None = None) -> Any:
    """A CPU inference session with all graph optimisations but those the export decides
    (`EXPORT_DECIDES`); `threads` defaults to the machine's cores. `optimized_to`: also write
    the graph the session runs there (see `session_ops`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_to is not None:
        options.optimized_model_filepath = str(optimized_to)
        options.log_severity_level = 3  # its warning: such a graph is for this CPU only (fine)
    return ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=EXPORT_DECIDES,
    )


def op_counts(path: Path | str) -> dict[str, int]:
    """How many nodes of each operator type the graph in `path` has."""
    import onnx

    return dict(Counter(node.op_type for node in onnx.load(str(path)).graph.node))


def session_ops(path: Path | str) -> dict[str, int]:
    """How many nodes of each operator ONNX Runtime runs for the graph in `path`, after the
    optimizer a session applies on load: what executes on this CPU, which the file's own
    operators do not say (the session fuses and rewrites)."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, threads=1, optimized_to=optimized)
        return dict(sorted(op_counts(optimized).items()))


def ort_forward(sess: Any) -> Callable[[dict[str, Any]], np.ndarray]:
    """(batch with input_ids and attention_mask, and word_shape_ids for a graph that reads
    them; numpy or torch) -> logits."""

    names = [i.name for i in sess.get_inputs()]  # ids, mask, and `word_shape_ids` if it reads them

    def forward(batch: dict[str, Any]) -> np.ndarray:
        feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in names}
        return sess.run(["logits"], feeds)[0]

    return forward
