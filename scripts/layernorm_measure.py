"""Issue 31, measured once per machine: ONNX Runtime's SkipLayerNormalization against an Add and
a LayerNormalization, the operator alone and in a task's whole int8 graph.

1. The operator: one-node graphs on (32, 64, hidden) floats, each timed in alternating blocks,
   beside torch's LayerNorm.
2. The graph: the fine-tuned model of `--task` (unpruned) exported once, fused with and
   without SkipLayerNormalization (`export.skip_layer_norm`), quantized as the export does,
   and timed beside fp32 PyTorch with `emergent.export.timing.measure` (batch 32, 64 tokens).

    PYTHONPATH=$PWD/src python scripts/layernorm_measure.py --root /work/main --task debate

Prints one JSON document with the CPU flags. Findings: docs/results.md ("Residual Add and
LayerNorm apart").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emergent.config import compose
from emergent.data.layout import load_task_split
from emergent.evaluation.predict import torch_forward
from emergent.export import timing
from emergent.export.onnx import export_onnx, fuse
from emergent.export.quantize import quantize
from emergent.hardware import cpu_facts
from emergent.models.finetuned import load_finetuned
from emergent.serving.runtime import EXPORT_DECIDES, ort_forward, session
from emergent.tasks import get_task

SHAPE = (32, 64)


def operator_graph(fused: bool, hidden: int) -> bytes:
    """(x, skip) -> LayerNorm(x + skip): one SkipLayerNormalization or Add + LayerNormalization."""
    from onnx import TensorProto, helper

    shape = [*SHAPE, hidden]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    weights = [
        helper.make_tensor("gamma", TensorProto.FLOAT, [hidden], np.ones(hidden, np.float32)),
        helper.make_tensor("beta", TensorProto.FLOAT, [hidden], np.zeros(hidden, np.float32)),
    ]
    if fused:
        nodes = [
            helper.make_node(
                "SkipLayerNormalization",
                ["x", "skip", "gamma", "beta"],
                ["y"],
                domain="com.microsoft",
                epsilon=1e-12,
            )
        ]
    else:
        nodes = [
            helper.make_node("Add", ["x", "skip"], ["sum"]),
            helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], epsilon=1e-12),
        ]
    graph = helper.make_graph(nodes, "layernorm", inputs, [output], weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def operator_ms(hidden: int, rounds: int = 6, runs: int = 20) -> dict[str, float]:
    """Median ms per call of each way to compute LayerNorm(x + skip)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x, skip = (rng.standard_normal((*SHAPE, hidden)).astype(np.float32) for _ in range(2))
    sessions = {}
    for name, fused in (("SkipLayerNormalization", True), ("Add + LayerNormalization", False)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        # no spinning after a call: idle ORT threads would take the cores from torch's turn
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(
            operator_graph(fused, hidden),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=EXPORT_DECIDES,
        )
    norm = torch.nn.LayerNorm(hidden, eps=1e-12)
    tx, tskip = torch.from_numpy(x), torch.from_numpy(skip)
    calls = {
        name: (lambda s=s: s.run(None, {"x": x, "skip": skip})) for name, s in sessions.items()
    }
    calls["torch LayerNorm(x + skip)"] = lambda: norm(tx + tskip)
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, call in calls.items():
                call()
                start = time.perf_counter()
                for _ in range(runs):
                    call()
                times[name].append((time.perf_counter() - start) / runs * 1000)
    return {name: round(float(np.median(t)), 3) for name, t in times.items()}


def graph_throughput(root: Path, task_name: str, work: Path) -> dict[str, Any]:
    """Texts/s at batch 32 of fp32 PyTorch and of fp32/int8 ONNX with and without the fusion."""
    cfg = compose([], root / "conf")
    task = get_task(cfg, task_name)
    model, tokenizer, _ = load_finetuned(task, root / "models" / task_name)
    task = task.for_model(model.config)
    texts = [task.text(e) for e in load_task_split(root / "data/prepared", task_name, "test")]
    raw = export_onnx(model, work / "raw.onnx", cfg.export.opset)
    forwards: dict[str, Any] = {"fp32 torch": torch_forward(model)}
    for fused in (True, False):
        tag = "SkipLayerNormalization" if fused else "Add + LayerNormalization"
        fp32 = work / f"fp32_{fused}.onnx"
        fuse(raw, fp32, model.config, skip_layer_norm=fused)
        int8 = quantize(fp32, work / f"int8_{fused}.onnx", per_channel=True)
        forwards[f"fp32 onnx, {tag}"] = ort_forward(session(fp32))
        forwards[f"int8 onnx, {tag}"] = ort_forward(session(int8))
    measured = timing.measure(
        forwards, dict.fromkeys(forwards, tokenizer), texts, SHAPE[1], 10, 12, 2, rounds=4
    )
    base = measured["fp32 torch"]["throughput"]
    return {
        name: {
            "texts_per_s": round(m["throughput"], 1),
            "x_fp32_torch": round(m["throughput"] / base, 2),
        }
        for name, m in measured.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="a checkout after dvc repro")
    parser.add_argument("--task", default="debate")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    facts = cpu_facts()
    with tempfile.TemporaryDirectory() as tmp:
        graph = graph_throughput(args.root, args.task, Path(tmp))
    hidden = json.loads((args.root / "models" / args.task / "config.json").read_text())[
        "hidden_size"
    ]
    report = {
        "cpu": {k: facts[k] for k in ("cpu_model", "avx2", "avx512_vnni", "avx512_bf16", "amx")},
        "operator_ms": operator_ms(hidden),
        f"{args.task}_batch32": graph,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
