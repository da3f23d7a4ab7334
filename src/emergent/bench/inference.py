"""Inference: fp32 PyTorch eager vs fp32 ONNX vs int8 ONNX on the exported package, same
inputs, interleaved; plus file sizes and the test metric recorded by the export stage."""

from __future__ import annotations

import json
from typing import Any

import torch
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.prepare import load_task_split
from emergent.evaluation.predict import torch_forward
from emergent.export import bench
from emergent.models.classifier import load_finetuned
from emergent.serving.runtime import ort_forward, session
from emergent.tasks import Task

TARGETS = {"int8_vs_torch_throughput_b32": 3.0, "fp32_vs_int8_size": 3.5, "max_metric_drop": 1.0}


def run(cfg: DictConfig, paths: Paths, task: Task, runs1: int = 30, runs32: int = 8) -> dict:
    model_dir = paths.inp("models", task.name)
    package = paths.inp("models", "export", task.name)
    if not (package / "model.int8.onnx").is_file():
        raise FileNotFoundError(
            f"{package} has no export: run `dvc repro export@{task.name}` first"
        )
    model, tokenizer, _ = load_finetuned(task, model_dir)
    examples = load_task_split(paths.inp(cfg.data.prepared_dir), task.name, "test")
    texts = [task.text(e) for e in examples]
    seq = int(cfg.export.seq_length)
    results = bench.measure(
        {
            "fp32_torch": torch_forward(model),
            "fp32_onnx": ort_forward(session(package / "model.onnx")),
            "int8_onnx": ort_forward(session(package / "model.int8.onnx")),
        },
        bench.synthetic_batch(tokenizer, texts, 1, seq),
        bench.synthetic_batch(tokenizer, texts, 32, seq),
        runs1,
        runs32,
        warmup=3,
    )
    sizes = {
        "fp32_torch": (model_dir / "model.safetensors").stat().st_size / 2**20,
        "fp32_onnx": (package / "model.onnx").stat().st_size / 2**20,
        "int8_onnx": (package / "model.int8.onnx").stat().st_size / 2**20,
    }
    exported: dict[str, Any] = {}
    metrics_file = paths.inp("metrics", f"export_{task.name}.json")
    if metrics_file.is_file():
        exported = json.loads(metrics_file.read_text(encoding="utf-8"))
    drop = exported["fp32_torch"]["metric"] - exported["int8_onnx"]["metric"] if exported else None
    ratios = {
        "int8_vs_torch_throughput_b32": results["int8_onnx"]["throughput"]
        / results["fp32_torch"]["throughput"],
        "fp32_onnx_vs_torch_throughput_b32": results["fp32_onnx"]["throughput"]
        / results["fp32_torch"]["throughput"],
        "torch_vs_int8_latency_b1": results["fp32_torch"]["latency_ms_p50"]
        / results["int8_onnx"]["latency_ms_p50"],
        "fp32_vs_int8_size": sizes["fp32_onnx"] / sizes["int8_onnx"],
    }
    return {
        "task": task.name,
        "model": cfg.model.name,
        "seq_length": seq,
        "threads": torch.get_num_threads(),
        "variants": {k: {**v, "size_mb": sizes[k]} for k, v in results.items()},
        "ratios": ratios,
        "metric_drop_points": drop,
        "targets": TARGETS,
        "targets_met": {
            "int8_vs_torch_throughput_b32": ratios["int8_vs_torch_throughput_b32"]
            >= TARGETS["int8_vs_torch_throughput_b32"],
            "fp32_vs_int8_size": ratios["fp32_vs_int8_size"] >= TARGETS["fp32_vs_int8_size"],
            "max_metric_drop": drop is not None and drop <= TARGETS["max_metric_drop"],
        },
    }
