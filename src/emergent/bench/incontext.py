"""In-context learning on a causal LM: what the reused demonstration cache buys.

The same queries, with the same k demonstrations per class before each, scored twice per round
(interleaved, so a change in the machine's speed hits both): once with the demonstrations'
key/value cache computed once and extended by every batch (what the lab does), once with the
whole prompt run for every query. The two give the same scores (checked); the ratio is the
time the cache saves at each k.
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch

from emergent.config import Paths
from emergent.data.layout import load_task_split
from emergent.fewshot.backbones import preset_model
from emergent.fewshot.causal import Prefix, label_logprobs
from emergent.fewshot.causal_lab import build_causal_lab
from emergent.fewshot.demonstrations import sample_per_class
from emergent.fewshot.protocol import FewShotData
from emergent.hardware import cpu_facts, resolve_precision
from emergent.schema import FewshotConfig, ModelConfig, Settings


def causal_preset(fcfg: FewshotConfig) -> tuple[str, ModelConfig]:
    """The first causal LM among `fewshot.models` (name, its model preset validated)."""
    for index, entry in enumerate(fcfg.models):
        if entry.preset:
            model_cfg = preset_model(entry.preset, f"fewshot.models[{index}]")
            if model_cfg.family == "causal":
                if entry.source:
                    model_cfg = model_cfg.model_copy(update={"source": entry.source})
                return entry.name, model_cfg
    raise ValueError("fewshot.models has no causal LM preset to benchmark")


def run(
    settings: Settings,
    paths: Paths,
    ks: tuple[int, ...] = (4, 16),
    texts: int = 48,
    rounds: int = 2,
) -> dict[str, Any]:
    fcfg = settings.fewshot
    task = fcfg.task
    prepared = paths.inp(settings.data.prepared_dir)
    split = {
        name: [
            {"text": e["text"], "label": str(e["label"])}
            for e in load_task_split(prepared, task, name)
        ]
        for name in ("train", "test")
    }
    labels = sorted({e["label"] for e in split["train"]})
    queries = random.Random(0).sample(split["test"], min(texts, len(split["test"])))
    name, model_cfg = causal_preset(fcfg)
    data = FewShotData(labels, split["train"], split["train"], queries)
    lab = build_causal_lab(model_cfg, fcfg, data, None, "fewshot.models")
    model = lab.load()
    precision = resolve_precision(fcfg.precision)
    results: dict[str, Any] = {}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
        for k in ks:
            shots = sample_per_class(split["train"], labels, k, seed=1)
            prefix_ids, rows = lab.encode(queries, lab.demonstrations(shots, 1))
            times: dict[str, list[float]] = {"cached": [], "uncached": []}
            scores: dict[str, torch.Tensor] = {}
            for _ in range(rounds):
                start = time.perf_counter()
                scores["cached"] = label_logprobs(
                    model, rows, lab.word_ids, lab.pad_id, lab.batch_size, Prefix(model, prefix_ids)
                )
                times["cached"].append(time.perf_counter() - start)
                start = time.perf_counter()
                scores["uncached"] = label_logprobs(
                    model, [prefix_ids + r for r in rows], lab.word_ids, lab.pad_id, lab.batch_size
                )
                times["uncached"].append(time.perf_counter() - start)
            agree = (scores["cached"].argmax(-1) == scores["uncached"].argmax(-1)).float().mean()
            results[f"k={k}"] = {
                "prefix_tokens": len(prefix_ids),
                "mean_query_tokens": round(sum(map(len, rows)) / len(rows), 1),
                "cached_texts_per_s": round(len(rows) / min(times["cached"]), 2),
                "uncached_texts_per_s": round(len(rows) / min(times["uncached"]), 2),
                "predictions_agree": float(agree),
                "max_logprob_difference": float(
                    (scores["cached"] - scores["uncached"]).abs().max()
                ),
            }
    facts = cpu_facts()
    return {
        "model": name,
        "task": task,
        "texts": len(queries),
        "precision": precision,
        "threads": facts["torch_threads"],
        "results": results,
        "rates": {
            f"{k} {mode}": v[f"{mode}_texts_per_s"]
            for k, v in results.items()
            for mode in ("cached", "uncached")
        },
        "ratios": {
            f"cached_vs_uncached_{k}": round(v["cached_texts_per_s"] / v["uncached_texts_per_s"], 3)
            for k, v in results.items()
        },
    }
