"""ONNX Runtime sessions and forward functions. Serving owns the runtime; export and the
benchmarks use it from here. Never imports torch, so a service stays small and starts fast."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def session(path: Path | str, threads: int | None = None) -> Any:
    """A CPU inference session with all graph optimisations; `threads` defaults to the
    machine's cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_forward(sess: Any) -> Callable[[dict[str, Any]], np.ndarray]:
    """(batch with input_ids and attention_mask, and word_shape_ids for a graph that reads
    them; numpy or torch) -> logits."""

    names = [i.name for i in sess.get_inputs()]  # ids, mask, and `word_shape_ids` if it reads them

    def forward(batch: dict[str, Any]) -> np.ndarray:
        feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in names}
        return sess.run(["logits"], feeds)[0]

    return forward
