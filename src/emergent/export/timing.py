"""Latency, throughput and file sizes of model variants, measured interleaved in one run.

Shared by the export stage (its metrics and model card) and `make bench` (bench/inference):
both measure a package the same way, with `measure_package`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emergent.evaluation.predict import torch_forward
from emergent.serving.package import FP32_MODEL_FILE, MODEL_FILE, Variant
from emergent.serving.runtime import ort_forward, session
from emergent.tasks.shapes import INPUT, text_shapes


def synthetic_batch(
    tokenizer: Any, texts: list[str], batch_size: int, seq_length: int
) -> dict[str, np.ndarray]:
    """Real text, tokenized and padded/truncated to exactly `seq_length` tokens."""
    chosen = [texts[i % len(texts)] for i in range(batch_size)]
    enc = tokenizer(
        chosen,
        truncation=True,
        max_length=seq_length,
        padding="max_length",
        return_tensors="np",
        return_offsets_mapping=True,
    )
    shapes = [
        text_shapes(text, enc.word_ids(i), enc["offset_mapping"][i].tolist())
        for i, text in enumerate(chosen)
    ]
    return {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
        INPUT: np.asarray(shapes, dtype=np.int64),  # read only by models with word shapes
    }


def size_mb(path: Path) -> float:
    return Path(path).stat().st_size / 2**20


def measure(
    forwards: Mapping[str, Callable[[dict], Any]],
    tokenizers: Mapping[str, Any],
    texts: Sequence[str],
    seq_length: int,
    runs1: int,
    runs32: int,
    warmup: int,
    rounds: int = 3,
) -> dict[str, dict[str, float]]:
    """Per variant: latency p50/p95 (ms) at batch 1, throughput (sequences/s) at batch 32.

    Each variant gets the same texts through its own tokenizer (a vocabulary-pruned model has
    its own ids). Variants run in blocks, as each would in a service of its own: `warmup`
    untimed calls, then its share of the timed runs; the blocks alternate over `rounds`
    rounds, so a change in machine load still reaches every variant. Alternating single
    calls, as this did before, let one runtime's threads and cache footprint slow the next
    call of the other (sentiment package, 2 cores: fp32 PyTorch batch-1 latency 37 ms
    interleaved vs 16 ms alone, int8 ONNX 4.2 vs 2.5 ms). Variants named `*torch` get torch
    tensors, the others numpy arrays.
    """
    batches: dict[str, dict[str, Any]] = {}
    for name in forwards:
        for key, size in (("b1", 1), ("b32", 32)):
            batch: dict[str, Any] = synthetic_batch(tokenizers[name], list(texts), size, seq_length)
            if name.endswith("torch"):
                batch = {k: torch.as_tensor(v) for k, v in batch.items()}
            batches[f"{name}/{key}"] = batch
    lat: dict[str, list[float]] = {k: [] for k in forwards}
    thr: dict[str, list[float]] = {k: [] for k in forwards}

    def call(name: str, key: str) -> float:
        batch = batches[f"{name}/{key}"]
        start = time.perf_counter()
        with torch.inference_mode():
            forwards[name](batch)
        return time.perf_counter() - start

    def share(runs: int, r: int) -> int:
        """Round r's part of `runs` (every run is made; early rounds take the remainder)."""
        return runs // rounds + (1 if r < runs % rounds else 0)

    for r in range(rounds):
        for name in forwards:
            for _ in range(warmup):
                call(name, "b1")
                call(name, "b32")
            lat[name] += [call(name, "b1") * 1000 for _ in range(share(runs1, r))]
            thr[name] += [32 / call(name, "b32") for _ in range(share(runs32, r))]
    return {
        name: {
            "latency_ms_p50": float(np.percentile(lat[name], 50)),
            "latency_ms_p95": float(np.percentile(lat[name], 95)),
            "throughput": float(statistics.median(thr[name])),
        }
        for name in forwards
    }


def measure_package(
    model: torch.nn.Module,
    tokenizer: Any,
    model_dir: Path,
    package: Path,
    package_tokenizer: Any,
    texts: Sequence[str],
    seq_length: int,
    runs1: int,
    runs32: int,
    warmup: int,
    sessions: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """The fine-tuned PyTorch model (`model_dir/model.safetensors`) beside its export
    (`package/model.onnx` and `model.int8.onnx`): per variant `size_mb`, then `measure`'s
    latency and throughput. `sessions` reuses ONNX Runtime sessions the caller has open."""
    sessions = dict(sessions or {})
    files: dict[str, Path] = {
        Variant.FP32_TORCH: model_dir / "model.safetensors",
        Variant.FP32_ONNX: package / FP32_MODEL_FILE,
        Variant.INT8_ONNX: package / MODEL_FILE,
    }
    for name in (Variant.FP32_ONNX, Variant.INT8_ONNX):
        if name not in sessions:
            sessions[name] = session(files[name])
    timings = measure(
        {
            Variant.FP32_TORCH: torch_forward(model),
            Variant.FP32_ONNX: ort_forward(sessions[Variant.FP32_ONNX]),
            Variant.INT8_ONNX: ort_forward(sessions[Variant.INT8_ONNX]),
        },
        {
            Variant.FP32_TORCH: tokenizer,
            Variant.FP32_ONNX: package_tokenizer,
            Variant.INT8_ONNX: package_tokenizer,
        },
        texts,
        seq_length,
        runs1,
        runs32,
        warmup,
    )
    return {name: {"size_mb": size_mb(files[name]), **timings[name]} for name in timings}


def ratios(variants: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The speed and size ratios the issue's targets are stated in (int8 ONNX vs fp32)."""
    torch_, fp32, int8 = (
        variants[v] for v in (Variant.FP32_TORCH, Variant.FP32_ONNX, Variant.INT8_ONNX)
    )
    return {
        "int8_vs_torch_throughput_b32": int8["throughput"] / torch_["throughput"],
        "fp32_onnx_vs_torch_throughput_b32": fp32["throughput"] / torch_["throughput"],
        "torch_vs_int8_latency_b1": torch_["latency_ms_p50"] / int8["latency_ms_p50"],
        "fp32_vs_int8_size": fp32["size_mb"] / int8["size_mb"],
        "torch_vs_int8_size": torch_["size_mb"] / int8["size_mb"],
    }
