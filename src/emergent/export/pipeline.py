"""The export stage's work: prune (optional), fused ONNX export, int8 quantization, parity
gate, timing and the package files. The stage (`emergent.stages.export`) only wires paths and
tracking around `export_package`."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.mlm import read_corpus
from emergent.data.prepare import load_task_split
from emergent.evaluation.bootstrap import Bootstrap, drop_interval
from emergent.evaluation.plots import write_csv
from emergent.evaluation.predict import batches, encode_for_scoring, predict, torch_forward
from emergent.export import bench
from emergent.export.card import model_card
from emergent.export.prune import CURVE_FIELDS, choose
from emergent.export.quantize import quantize
from emergent.export.recover import recover
from emergent.hardware import device_facts
from emergent.io import write_json
from emergent.models.classifier import load_finetuned
from emergent.serving.runtime import ort_forward, session
from emergent.tasks import Task, task_spec

log = logging.getLogger(__name__)

PARITY_EXAMPLES = 256
IMPORTANCE_BATCH = 16


def max_logit_diff(
    task: Task,
    model: torch.nn.Module,
    sess: object,
    tokenizer: object,
    examples: list[dict],
    labels: list[str],
    max_length: int,
) -> float:
    """Largest |logit difference| between PyTorch and an ONNX session on test rows (real
    tokens only for per-token logits: padding carries no prediction)."""
    rows = encode_for_scoring(task, tokenizer, examples[:PARITY_EXAMPLES], labels, max_length)
    worst = 0.0
    for _, batch in batches(task, tokenizer, rows, 32):
        with torch.inference_mode():
            ref = torch_forward(model)(batch).numpy()
        diff = np.abs(ort_forward(sess)(batch) - ref)
        if diff.ndim == 3:
            diff = diff[batch["attention_mask"].numpy().astype(bool)]
        worst = max(worst, float(diff.max()))
    return worst


def gate_failures(parity: dict, name: str) -> list[str]:
    """Why the package must not ship: fp32 ONNX off PyTorch, or int8 losing too much.

    The drop is judged on the validation split, where the pruning level and the int8 scheme
    were chosen; the test split only reports (a choice made on it would flatter its figures).
    """
    failures = []
    if parity["max_abs_logit_diff"] > parity["atol"]:
        failures.append(
            f"fp32 ONNX logits differ from PyTorch by "
            f"{parity['max_abs_logit_diff']:.2e} > export.parity_atol={parity['atol']}"
        )
    if parity["int8_val_drop"] > parity["max_metric_drop"]:
        failures.append(
            f"int8 {name} drops {parity['int8_val_drop']:.2f} points on the validation split "
            f"(> export.max_metric_drop={parity['max_metric_drop']})"
        )
    return failures


def publish(paths: Paths, task: Task, result: dict[str, Any]) -> None:
    """Write the trade-off curve and the headline metrics file of a package that shipped
    (after the gate: a failed export leaves the previous figures beside the previous package)."""
    write_csv(paths.out("plots", "export", f"{task.name}_prune.csv"), result["curve"], CURVE_FIELDS)
    write_json(paths.out("metrics", f"export_{task.name}.json"), result["headline"])


def export_package(
    cfg: DictConfig, paths: Paths, task: Task, tmp: Path
) -> tuple[dict[str, Any], list[str]]:
    """Write the package into `tmp` only; return its figures (`headline` and `curve` for
    `publish`) and the parity-gate failures (empty when the package may ship)."""
    ecfg = cfg.export
    model_dir = paths.inp("models", task.name)
    model, tokenizer, labels = load_finetuned(task, model_dir)
    prepared = paths.inp(cfg.data.prepared_dir)
    splits = {s: load_task_split(prepared, task.name, s) for s in ("validation", "test")}
    examples = splits["test"]
    training = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    max_length = int(training["max_length"])  # the window the model was trained with
    name = task.headline.label
    texts = [task.text(e) for e in examples]

    def evaluate(forward: Any, tok: Any, split: str = "test") -> float:
        """The task's headline metric on `split`, in points. Choices (pruning level, int8
        scheme) are made on validation; test figures are reported, never chosen on."""
        return score(split, predict(task, forward, tok, splits[split], labels, max_length))

    def score(split: str, predicted: tuple[list, list]) -> float:
        rows = splits[split]
        return task.headline.points(task.evaluate(rows, labels, *predicted).metrics)

    def importance_batches() -> Any:
        pcfg = ecfg.prune
        rows = load_task_split(prepared, task.name, "validation")
        encoded = encode_for_scoring(
            task, tokenizer, rows[: int(pcfg.importance_examples)], labels, max_length
        )
        return [batch for _, batch in batches(task, tokenizer, encoded, IMPORTANCE_BATCH)]

    def vocab_texts() -> list[str]:
        # Corpus and the task's train text: validation and test text stay unseen, so both
        # show what new text loses to the cut vocabulary (validation decides, test reports).
        corpus = read_corpus(prepared / "corpus" / "train.txt")
        return corpus + [task.text(e) for e in load_task_split(prepared, task.name, "train")]

    steps = int((ecfg.get("prune") or {}).get("recover_steps") or 0)

    def recover_pruned(pruned: Any) -> float:
        return recover(
            pruned, tokenizer, task, labels, cfg, prepared, max_length, steps, teacher=model
        )

    reference = {
        s: predict(task, torch_forward(model), tokenizer, splits[s], labels, max_length)
        for s in splits
    }
    baseline = {s: score(s, reference[s]) for s in splits}
    work = tmp / "candidates"
    work.mkdir()
    chosen, curve = choose(
        cfg,
        model,
        tokenizer,
        baseline,
        evaluate,
        importance_batches,
        vocab_texts,
        texts,
        work,
        recover_pruned if steps else None,
        drop=task.headline.drop,
    )
    shutil.move(str(chosen.fp32_path), tmp / "model.onnx")
    fp32_sess = session(tmp / "model.onnx")
    scores = {
        "fp32_torch": baseline["test"],
        "pruned_torch": evaluate(torch_forward(chosen.model), chosen.tokenizer),
        "fp32_onnx": evaluate(ort_forward(fp32_sess), chosen.tokenizer),
    }
    # int8: per_channel auto tries both on the chosen model and keeps the one more accurate
    # on validation. The candidate's own int8 model was scored on both splits in the curve.
    quantized = {ecfg.per_channel is True: chosen.int8_path}
    if ecfg.per_channel == "auto":
        quantized[True] = quantize(tmp / "model.onnx", work / "int8.pc1.onnx", True)

    def int8_score(pc: bool, split: str) -> float:
        if quantized[pc] == chosen.int8_path and "val_metric" in chosen.row:
            return float(chosen.row["val_metric" if split == "validation" else "metric"])
        return evaluate(ort_forward(session(quantized[pc])), chosen.tokenizer, split)

    val_scores = {pc: int8_score(pc, "validation") for pc in quantized}
    per_channel = max(val_scores, key=lambda pc: val_scores[pc])
    log.info("int8 validation %s by per_channel: %s", name, val_scores)
    scores["int8_onnx"] = int8_score(per_channel, "test")
    shutil.move(str(quantized[per_channel]), tmp / "model.int8.onnx")
    shutil.rmtree(work)

    int8_sess = session(tmp / "model.int8.onnx")
    shipped = predict(task, ort_forward(int8_sess), chosen.tokenizer, examples, labels, max_length)
    drop_low, drop_high = drop_interval(
        task,
        examples,
        labels,
        reference["test"][0],
        shipped[0],
        Bootstrap.from_config(cfg),
    )
    parity = {
        "max_abs_logit_diff": max_logit_diff(
            task, chosen.model, fp32_sess, chosen.tokenizer, examples, labels, max_length
        ),
        "atol": float(ecfg.parity_atol),
        "int8_drop": task.headline.drop(scores["fp32_torch"], scores["int8_onnx"]),
        # paired bootstrap over test examples: how far the test drop is from noise
        "int8_drop_ci": [drop_low, drop_high],
        "int8_val_drop": task.headline.drop(baseline["validation"], val_scores[per_channel]),
        "max_metric_drop": float(ecfg.max_metric_drop),
        "per_channel": per_channel,
        "threads": torch.get_num_threads(),
    }
    timings = bench.measure(
        {
            "fp32_torch": torch_forward(model),
            "fp32_onnx": ort_forward(fp32_sess),
            "int8_onnx": ort_forward(int8_sess),
        },
        {"fp32_torch": tokenizer, "fp32_onnx": chosen.tokenizer, "int8_onnx": chosen.tokenizer},
        texts,
        int(ecfg.seq_length),
        int(ecfg.bench.batch1_runs),
        int(ecfg.bench.batch32_runs),
        int(ecfg.bench.warmup),
    )
    sizes = {
        "fp32_torch": bench.size_mb(model_dir / "model.safetensors"),
        "fp32_onnx": bench.size_mb(tmp / "model.onnx"),
        "int8_onnx": bench.size_mb(tmp / "model.int8.onnx"),
    }
    variants = {v: {"metric": scores[v], "size_mb": sizes[v], **timings[v]} for v in timings}
    if not curve:  # no pruning: the curve is the one shipped model (DVC expects the file)
        chosen.row.update(
            metric=scores["int8_onnx"],
            drop=parity["int8_drop"],
            val_metric=val_scores[per_channel],
            val_drop=parity["int8_val_drop"],
            throughput=timings["int8_onnx"]["throughput"],
            latency_ms_p50=timings["int8_onnx"]["latency_ms_p50"],
            size_mb=sizes["int8_onnx"],
        )
    pruned = {**chosen.row, "metric_torch": scores["pruned_torch"], "fused_ops": chosen.fused_ops}
    device = device_facts("cpu")
    result = {
        **variants,
        "metric_name": name,
        "seq_length": int(ecfg.seq_length),
        "device": device,
        "parity": parity,
        "pruning": pruned if curve else None,
        "ratios": bench.ratios(variants),
    }
    chosen.tokenizer.save_pretrained(str(tmp))
    write_json(tmp / "labels.json", labels)
    write_json(
        tmp / "export.json",
        {
            "task": task.name,
            "task_spec": task_spec(cfg, task.name),
            "pad_token_id": int(chosen.tokenizer.pad_token_id or 0),
            "max_length": max_length,
            "opset": int(ecfg.opset),
            "per_channel": per_channel,
            # details (the metrics file keeps headline figures only)
            "metric_name": name,
            "seq_length": int(ecfg.seq_length),
            "device": device,  # what the timings ran on (torch and ONNX Runtime on the CPU)
            "variants": variants,
            "parity": parity,
            "ratios": result["ratios"],
            "pruning": result["pruning"],
        },
    )
    (tmp / "MODEL_CARD.md").write_text(
        model_card(task, cfg, variants, labels, training, parity, result["pruning"]),
        encoding="utf-8",
    )
    headline = {
        **{
            v: {k: figures[k] for k in ("metric", "size_mb", "latency_ms_p50", "throughput")}
            for v, figures in variants.items()
        },
        "int8_vs_torch_throughput": result["ratios"].get("int8_vs_torch_throughput_b32"),
        "int8_drop": parity["int8_drop"],
        "int8_drop_ci_low": parity["int8_drop_ci"][0],
        "int8_drop_ci_high": parity["int8_drop_ci"][1],
        "int8_val_drop": parity["int8_val_drop"],
    }
    return {**result, "headline": headline, "curve": curve or [chosen.row]}, gate_failures(
        parity, name
    )
