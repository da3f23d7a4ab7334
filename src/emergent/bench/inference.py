"""Inference: fp32 PyTorch eager (the fine-tuned model) vs fp32 ONNX vs int8 ONNX (the exported,
possibly pruned and fused package), same texts, interleaved; plus file sizes, the test metric
recorded by the export stage and the CPU facts."""

from __future__ import annotations

from emergent.config import Paths
from emergent.data.layout import load_task_split
from emergent.export import timing
from emergent.hardware import cpu_facts, device_facts
from emergent.models.backbone import load_tokenizer
from emergent.models.finetuned import load_finetuned
from emergent.schema import Settings
from emergent.serving.package import MODEL_FILE, ExportInfo, Variant
from emergent.serving.runtime import session_ops
from emergent.tasks import Task

TARGETS = {
    "int8_vs_torch_throughput_b32": 3.0,
    "torch_vs_int8_latency_b1": 2.0,
    "torch_vs_int8_size": 3.5,
    "max_metric_drop": 1.0,
}


def run(settings: Settings, paths: Paths, task: Task, runs1: int = 30, runs32: int = 8) -> dict:
    model_dir = paths.inp("models", task.name)
    package = paths.inp("models", "export", task.name)
    if not (package / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{package} has no export: run `dvc repro export@{task.name}` first"
        )
    # the export stage's measured metrics and pruning, from the package it wrote (read first:
    # a bad export.json is refused before minutes of timing)
    exported = ExportInfo.load(package)
    model, tokenizer, _ = load_finetuned(task, model_dir)
    exported_tokenizer = load_tokenizer(package)
    examples = load_task_split(paths.inp(settings.data.prepared_dir), task.name, "test")
    texts = [task.text(e) for e in examples]
    seq = settings.export.seq_length
    variants = timing.measure_package(
        model,
        tokenizer,
        model_dir,
        package,
        exported_tokenizer,
        texts,
        seq,
        runs1,
        runs32,
        warmup=3,
    )
    scored = exported.variants
    drop = task.headline.drop(
        scored[Variant.FP32_TORCH]["metric"], scored[Variant.INT8_ONNX]["metric"]
    )
    ratios = timing.ratios(variants)
    met = {k: ratios[k] >= target for k, target in TARGETS.items() if k in ratios}
    met["max_metric_drop"] = drop <= TARGETS["max_metric_drop"]
    facts = cpu_facts()
    return {
        "task": task.name,
        "model": settings.model.name,
        "seq_length": seq,
        # both runtimes time on the CPU (ONNX Runtime's CPUExecutionProvider, torch eager)
        "device": device_facts("cpu"),
        "threads": facts["torch_threads"],
        "cpu": facts,
        "variants": variants,
        "ratios": ratios,
        "metric_drop_points": drop,
        # the export's paired bootstrap interval of that test drop
        "metric_drop_ci": exported.parity.int8_drop_ci,
        "pruning": exported.pruning,
        # what ONNX Runtime runs for the int8 package on this CPU, after its optimizer
        "int8_ops_run": session_ops(package / MODEL_FILE),
        "targets": TARGETS,
        "targets_met": met,
    }
