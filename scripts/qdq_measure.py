"""Issue 31 item 2, measured once: dynamic vs static (QDQ) int8 on the real NER model.

Reads the fine-tuned NER model and prepared splits from a project checkout (read only), writes
its candidate graphs under a scratch folder, then times every variant side by side at batch 32
(`emergent.export.timing.measure`: blocks interleaved over rounds) and scores validation and
test entity F1. Prints one JSON document last (ORT's calibrators print notes before it).

    PYTHONPATH=$PWD/src python scripts/qdq_measure.py --root /work/main --work /tmp/qdq \
        --runs32 12 --rounds 6 --variants dynamic_pc,qdq_fused_minmax,qdq_fused_minmax_u8,...

Variants: fp32 PyTorch, the package's fused fp32 ONNX and dynamic int8 always; then dynamic
per channel / without the classifier / without embeddings, and static QDQ (MinMax, Entropy,
Percentile; s8 or u8 activations; per tensor or channel) on the fused graph (after symbolic
shape inference, which knows ORT's contrib ops) and on graphs fused without attention (and
without embeddings). Findings: docs/results.md, "Static int8 (QDQ) against dynamic int8".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emergent.config import Paths, compose
from emergent.data.layout import load_task_split
from emergent.evaluation.predict import batches, encode_for_scoring, torch_forward
from emergent.export import timing
from emergent.export.onnx import export_onnx, vendor_info_off
from emergent.export.pipeline import ExportInputs
from emergent.export.quantize import quantize
from emergent.serving.runtime import op_counts, ort_forward, session, session_ops
from emergent.tasks import get_task

log = logging.getLogger("qdq")
OPS_SHOWN = ("QuantizeLinear", "MatMul", "Attention", "QAttention", "MatMulInteger")


class Reader:
    """ORT CalibrationDataReader over encoded training rows (padded batches, numpy feeds)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds, self.i = feeds, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def fuse_partial(src: Path, dst: Path, config: Any, attention: bool, embed: bool) -> None:
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    opts = FusionOptions("bert")
    opts.enable_attention = attention
    opts.enable_embed_layer_norm = embed
    with vendor_info_off():
        m = optimizer.optimize_model(
            str(src),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            optimization_options=opts,
            opt_level=0,
        )
        m.save_model_to_file(str(dst))


def preprocess(src: Path, dst: Path) -> Path:
    """Symbolic shape inference (knows ORT's contrib ops), so the quantizer sees that the
    outputs of SkipLayerNormalization/Attention are float activations to quantize."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not dst.exists():
        with vendor_info_off():
            quant_pre_process(str(src), str(dst), skip_optimization=True)
    return dst


def dynamic(src: Path, dst: Path, per_channel: bool, ops: list[str], exclude: list[str]) -> float:
    """Seconds the export's dynamic quantization takes for this variant."""
    start = time.perf_counter()
    quantize(src, dst, per_channel, ops, exclude)
    return time.perf_counter() - start


def ort_ops(path: Path) -> dict[str, int]:
    """The operators ONNX Runtime runs after its own graph optimizations (what its CPU
    provider made of the QDQ pairs: QLinearMatMul, MatMulIntegerToFloat, ...)."""
    counts = session_ops(path)
    return {k: v for k, v in counts.items() if k not in ("Constant", "Shape")}


def static(
    src: Path,
    dst: Path,
    feeds: list[dict],
    method: str,
    per_channel: bool,
    act: str,
    ops: list[str],
) -> float:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    start = time.perf_counter()
    extra: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    method, _, percentile = method.partition(":")  # "Percentile:99.999"
    if method == "Percentile":
        extra["CalibPercentile"] = float(percentile or 99.99)
    with vendor_info_off():
        quantize_static(
            str(src),
            str(dst),
            Reader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ops,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=extra,
        )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/work/main"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/qdq"))
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--runs32", type=int, default=6)
    ap.add_argument("--variants", default="all")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    cfg = compose()
    task = get_task(cfg, "ner")
    inp = ExportInputs.load(cfg, Paths.for_dvc(args.root), task)
    model, tok = inp.model, inp.tokenizer
    package = args.root / "models" / "export" / "ner"

    train = load_task_split(inp.prepared, task.name, "train")[: args.calib]
    rows = encode_for_scoring(task, tok, train, inp.labels, inp.max_length)
    names = ["input_ids", "attention_mask", "word_shape_ids"]
    feeds = [
        {k: np.asarray(b[k], dtype=np.int64) for k in names if k in b}
        for _, b in batches(task, tok, rows, 16)
    ]
    # histogram calibrators stack batches: one width for all (the longest row)
    width = max(f["input_ids"].shape[1] for f in feeds)
    pad = {"input_ids": int(tok.pad_token_id or 0)}
    feeds = [
        {
            k: np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=pad.get(k, 0))
            for k, v in f.items()
        }
        for f in feeds
    ]

    raw = export_onnx(model, args.work / "raw.onnx", int(cfg.export.opset))
    noattn = args.work / "noattn.onnx"
    fuse_partial(raw, noattn, model.config, attention=False, embed=True)
    noemb = args.work / "noattn_noemb.onnx"
    fuse_partial(raw, noemb, model.config, attention=False, embed=False)
    files: dict[str, Path] = {
        "fp32_onnx": package / "model.onnx",
        "dynamic": package / "model.int8.onnx",
    }
    calib_s: dict[str, float] = {}
    mm = ["MatMul"]
    fused = preprocess(package / "model.onnx", args.work / "fused.pre.onnx")
    # the partly fused graphs fail symbolic shape inference; their activations (outputs of
    # standard ops) get QDQ without it
    full = ["MatMul", "Gemm", "Gather", "Attention", "EmbedLayerNormalization"]
    dplan = {
        # name: (per_channel, ops, nodes to exclude)
        "dynamic_pc": (True, full, []),
        "dynamic_no_cls": (False, full, ["/model/classifier/MatMul"]),
        "dynamic_no_emb": (False, ["MatMul", "Attention"], []),
    }
    plan = {
        # name: (graph, method, per_channel, activation type, ops)
        "qdq_fused_minmax": (fused, "MinMax", False, "s8", mm),
        "qdq_fused_minmax_pc_u8": (fused, "MinMax", True, "u8", mm),
        "qdq_fused_minmax_u8": (fused, "MinMax", False, "u8", mm),
        "qdq_fused_entropy": (fused, "Entropy", False, "s8", mm),
        "qdq_fused_entropy_u8": (fused, "Entropy", False, "u8", mm),
        "qdq_fused_percentile_u8": (fused, "Percentile", False, "u8", mm),
        "qdq_fused_percentile5_u8": (fused, "Percentile:99.999", False, "u8", mm),
        "qdq_minmax": (noattn, "MinMax", False, "s8", mm),
        "qdq_minmax_u8": (noattn, "MinMax", False, "u8", mm),
        "qdq_minmax_pc": (noattn, "MinMax", True, "s8", mm),
        "qdq_percentile": (noattn, "Percentile", False, "s8", mm),
        "qdq_entropy": (noattn, "Entropy", False, "s8", mm),
        "qdq_minmax_gather": (noemb, "MinMax", False, "s8", ["MatMul", "Gather"]),
    }
    if args.variants != "all":
        plan = {k: v for k, v in plan.items() if k in args.variants.split(",")}
        dplan = {k: v for k, v in dplan.items() if k in args.variants.split(",")}
    for name, (pc, ops, exclude) in dplan.items():
        dst = args.work / f"{name}.onnx"
        calib_s[name] = dynamic(package / "model.onnx", dst, pc, ops, exclude)
        files[name] = dst
    for name, (src, method, pc, act, ops) in plan.items():
        dst = args.work / f"{name}.onnx"
        calib_s[name] = static(src, dst, feeds, method, pc, act, ops)
        files[name] = dst
        log.info("%s calibrated in %.1f s", name, calib_s[name])

    sessions = {n: session(p) for n, p in files.items()}
    result: dict[str, dict[str, float]] = {"fp32_torch": {}}
    result["fp32_torch"]["size_mb"] = timing.size_mb(inp.model_dir / "model.safetensors")
    result["fp32_torch"]["val_f1"] = inp.evaluate(torch_forward(model), tok, "validation")
    result["fp32_torch"]["test_f1"] = inp.evaluate(torch_forward(model), tok, "test")
    for n, s in sessions.items():
        result[n] = {
            "size_mb": timing.size_mb(files[n]),
            "val_f1": inp.evaluate(ort_forward(s), tok, "validation"),
            "test_f1": inp.evaluate(ort_forward(s), tok, "test"),
            "calib_s": calib_s.get(n, 0.0),
            "ops": {k: v for k, v in op_counts(files[n]).items() if k in OPS_SHOWN},
            "ort_ops": ort_ops(files[n]),
        }
        log.info("%s %s", n, result[n])
    forwards = {"fp32_torch": torch_forward(model)} | {
        n: ort_forward(s) for n, s in sessions.items()
    }
    load = os.getloadavg()
    timings = timing.measure(
        forwards,
        dict.fromkeys(forwards, tok),
        inp.test_texts,
        int(cfg.export.seq_length),
        runs1=args.rounds,
        runs32=args.runs32,
        warmup=1,
        rounds=args.rounds,
    )
    ref = timings["fp32_torch"]["throughput"]
    for n in forwards:
        result[n] |= timings[n]
        result[n]["vs_torch_b32"] = timings[n]["throughput"] / ref
        result[n]["val_drop"] = result["fp32_torch"]["val_f1"] - result[n]["val_f1"]
        result[n]["test_drop"] = result["fp32_torch"]["test_f1"] - result[n]["test_f1"]
    flags = subprocess.run(
        "grep -o -w 'avx512_vnni\\|amx_tile\\|avx512_bf16\\|avx2' /proc/cpuinfo | sort -u",
        shell=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    print(
        json.dumps(
            {
                "flags": flags,
                "load_before": load,
                "load_after": os.getloadavg(),
                "torch_threads": torch.get_num_threads(),
                "results": result,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
