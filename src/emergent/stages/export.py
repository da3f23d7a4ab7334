"""Stage `export@{task}`: ONNX fp32 + int8, parity gate, latency, package, model registry.

The package lands in `models/export/{task}/` (DVC forbids an output inside the fine-tuning
stage's `models/{task}/`).
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import torch
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.prepare import load_task_split
from emergent.errors import StageError
from emergent.evaluation.predict import batches, encode_for_scoring, predict, torch_forward
from emergent.export import bench
from emergent.export.card import model_card
from emergent.export.onnx import export_onnx
from emergent.export.quantize import quantize
from emergent.io import atomic_dir, atomic_write_text, sha256_file, write_json
from emergent.models.classifier import load_finetuned
from emergent.serving.runtime import ort_forward, session
from emergent.tasks import Task, task_spec
from emergent.tracking import stage_run

log = logging.getLogger(__name__)

PARITY_EXAMPLES = 256


def max_logit_diff(
    task: Task,
    model: torch.nn.Module,
    sess: object,
    tokenizer: object,
    examples: list[dict],
    labels: list[str],
    max_length: int,
) -> float:
    rows = encode_for_scoring(task, tokenizer, examples[:PARITY_EXAMPLES], labels, max_length)
    worst = 0.0
    for _, batch in batches(task, tokenizer, rows, 32):
        with torch.inference_mode():
            ref = torch_forward(model)(batch).numpy()
        out = ort_forward(sess)(batch)
        diff = np.abs(out - ref)
        if diff.ndim == 3:  # per-token logits: padding positions carry no prediction
            diff = diff[batch["attention_mask"].numpy().astype(bool)]
        worst = max(worst, float(diff.max()))
    return worst


def gate_failures(parity: dict, metric_name: str) -> list[str]:
    failures = []
    if parity["max_abs_logit_diff"] > parity["atol"]:
        failures.append(
            f"fp32 ONNX logits differ from PyTorch by "
            f"{parity['max_abs_logit_diff']:.2e} > export.parity_atol={parity['atol']}"
        )
    if parity["int8_drop"] > parity["max_metric_drop"]:
        failures.append(
            f"int8 {metric_name} drops {parity['int8_drop']:.2f} points "
            f"(> export.max_metric_drop={parity['max_metric_drop']})"
        )
    return failures


def run(cfg: DictConfig, paths: Paths, task: Task) -> None:
    ecfg = cfg.export
    model_dir = paths.inp("models", task.name)
    model, tokenizer, labels = load_finetuned(task, model_dir)
    examples = load_task_split(paths.inp(cfg.data.prepared_dir), task.name, "test")
    training = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    max_length = int(training["max_length"])
    metric_name = task.headline.label
    manifest = paths.inp(cfg.data.prepared_dir, "manifest.json")
    out_dir = paths.out("models", "export", task.name)
    with stage_run(
        cfg,
        "export",
        task.name,
        data_sha256=sha256_file(manifest) if manifest.is_file() else "",
        extra_tags={"task": task.name},
    ) as tracker:
        with atomic_dir(out_dir) as tmp:
            fp32_path = export_onnx(model, tmp / "model.onnx", int(ecfg.opset))
            fp32_sess = session(fp32_path)

            def evaluate(forward: object) -> tuple[float, dict]:
                pred, conf = predict(task, forward, tokenizer, examples, labels, max_length)
                metrics = task.evaluate(examples, labels, pred, conf).metrics
                return task.headline.points(metrics), metrics

            scores = {
                "fp32_torch": evaluate(torch_forward(model))[0],
                "fp32_onnx": evaluate(ort_forward(fp32_sess))[0],
            }
            choices = {"auto": [False, True], True: [True], False: [False]}[
                ecfg.per_channel if ecfg.per_channel == "auto" else bool(ecfg.per_channel)
            ]
            candidates = {}
            for per_channel in choices:
                path = quantize(fp32_path, tmp / f"int8.pc{int(per_channel)}.onnx", per_channel)
                candidates[per_channel] = (evaluate(ort_forward(session(path)))[0], path)
                log.info(
                    "int8 per_channel=%s: %s %.2f",
                    per_channel,
                    metric_name,
                    candidates[per_channel][0],
                )
            per_channel = max(candidates, key=lambda k: candidates[k][0])
            scores["int8_onnx"] = candidates[per_channel][0]
            shutil.move(str(candidates[per_channel][1]), tmp / "model.int8.onnx")
            for _, path in candidates.values():
                path.unlink(missing_ok=True)
            int8_sess = session(tmp / "model.int8.onnx")

            parity = {
                "max_abs_logit_diff": max_logit_diff(
                    task, model, fp32_sess, tokenizer, examples, labels, max_length
                ),
                "atol": float(ecfg.parity_atol),
                "int8_drop": task.headline.drop(scores["fp32_torch"], scores["int8_onnx"]),
                "max_metric_drop": float(ecfg.max_metric_drop),
                "per_channel": per_channel,
                "threads": torch.get_num_threads(),
            }
            texts = [task.text(e) for e in examples]
            seq = int(ecfg.seq_length)
            timings = bench.measure(
                {
                    "fp32_torch": torch_forward(model),
                    "fp32_onnx": ort_forward(fp32_sess),
                    "int8_onnx": ort_forward(int8_sess),
                },
                bench.synthetic_batch(tokenizer, texts, 1, seq),
                bench.synthetic_batch(tokenizer, texts, 32, seq),
                int(ecfg.bench.batch1_runs),
                int(ecfg.bench.batch32_runs),
                int(ecfg.bench.warmup),
            )
            sizes = {
                "fp32_torch": (model_dir / "model.safetensors").stat().st_size,
                "fp32_onnx": (tmp / "model.onnx").stat().st_size,
                "int8_onnx": (tmp / "model.int8.onnx").stat().st_size,
            }
            variants = {
                name: {"metric": scores[name], "size_mb": sizes[name] / 2**20, **timings[name]}
                for name in scores
            }
            result = {
                **variants,
                "metric_name": metric_name,
                "seq_length": seq,
                "parity": parity,
                "ratios": {
                    "int8_vs_torch_throughput": variants["int8_onnx"]["throughput"]
                    / variants["fp32_torch"]["throughput"],
                    "fp32_vs_int8_size": variants["fp32_onnx"]["size_mb"]
                    / variants["int8_onnx"]["size_mb"],
                },
            }
            tokenizer.save_pretrained(str(tmp))
            write_json(tmp / "labels.json", labels)
            write_json(
                tmp / "export.json",
                {
                    "task": task.name,
                    "task_spec": task_spec(cfg, task.name),
                    "pad_token_id": int(tokenizer.pad_token_id or 0),
                    "max_length": max_length,
                    "opset": int(ecfg.opset),
                    "per_channel": per_channel,
                    "metric_name": metric_name,
                },
            )
            atomic_write_text(
                tmp / "MODEL_CARD.md",
                model_card(task, cfg, variants, labels, training, parity),
            )
            write_json(paths.out("metrics", f"export_{task.name}.json"), result)
            tracker.log_metrics({k: v for k, v in result.items() if k not in {"parity"}})
            tracker.log_metrics(
                {f"parity.{k}": v for k, v in parity.items() if isinstance(v, float)}
            )
            failures = gate_failures(parity, metric_name)
            if failures:  # raised inside atomic_dir: the previous package stays in place
                tracker.set_tags({"parity_gate": "failed"})
                raise StageError("parity gate failed: " + "; ".join(failures))
        tracker.set_tags({"parity_gate": "passed"})
        if tracker.enabled:
            from emergent.registry import register

            register(task.name, out_dir, scores["int8_onnx"], texts[:2])
    log.info("export %s: %s", task.name, json.dumps(result["ratios"]))
