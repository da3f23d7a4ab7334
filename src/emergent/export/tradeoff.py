"""The pruning trade-off of the export stage: for each pruning level, prune a copy of the
fine-tuned model, export it fused, quantize it int8, and measure size, speed and the test
metric on validation (where the choice is made) and test (reported); the smallest model within
the allowed validation drop is the one that ships."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from emergent.export import timing
from emergent.export.onnx import export_onnx, fuse
from emergent.export.quantize import quantize
from emergent.models import pruning
from emergent.serving.runtime import ort_forward, session

log = logging.getLogger(__name__)

CURVE_FIELDS = [
    "level",
    "heads_per_layer",
    "intermediate_size",
    "vocab_size",
    "params_m",
    "size_mb",
    "throughput",
    "latency_ms_p50",
    "metric",
    "drop",
    "val_metric",
    "val_drop",
    "recover_seconds",
]


@dataclass
class Candidate:
    """One pruning level: the pruned torch model, its tokenizer and its ONNX files."""

    level: float | None
    model: Any
    tokenizer: Any
    fp32_path: Path
    int8_path: Path
    fused_ops: dict[str, int]
    row: dict[str, Any] = field(default_factory=dict)


def prune_level(
    model: Any,
    level: float | None,
    scores: tuple[Any, Any] | None,
    recover: Callable[[Any], float] | None,
) -> tuple[Any, dict[str, Any]]:
    """A copy of `model` with the share `level` of heads and FFN neurons removed, then (level
    > 0 and `recover` given) recovery-fine-tuned. Returns it and what the curve records."""
    model = copy.deepcopy(model)
    kept: dict[str, Any] = {"recover_seconds": 0.0}
    if level is not None and scores is not None:
        kept.update(pruning.prune_structure(model, scores[0], scores[1], level))
        if level > 0 and recover is not None:
            kept["recover_seconds"] = round(recover(model), 1)
    return model.eval(), kept


def build_candidate(
    model: Any,
    tokenizer: Any,
    level: float | None,
    kept: dict[str, Any],
    keep_ids: set[int] | None,
    out_dir: Path,
    opset: int,
    per_channel: bool,
) -> Candidate:
    """Export a copy of the (already structurally pruned) `model` fused and quantize it, with
    its vocabulary cut to `keep_ids` first when given."""
    model = copy.deepcopy(model)
    if keep_ids is not None:
        tokenizer = pruning.prune_vocabulary(model, tokenizer, keep_ids)
    tag = ("full" if level is None else f"p{round(100 * level):02d}") + (
        "" if keep_ids is None else "v"
    )
    raw = export_onnx(model, out_dir / f"{tag}.raw.onnx", opset)
    fp32 = out_dir / f"{tag}.fp32.onnx"
    ops = fuse(raw, fp32, model.config)
    raw.unlink()
    int8 = quantize(fp32, out_dir / f"{tag}.int8.pc{int(per_channel)}.onnx", per_channel)
    row = {
        "level": 0.0 if level is None else level,
        "heads_per_layer": pruning.heads_per_layer(model),
        "intermediate_size": model.config.intermediate_size,
        "vocab_size": model.config.vocab_size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "size_mb": timing.size_mb(int8),
        **kept,
    }
    return Candidate(level, model.eval(), tokenizer, fp32, int8, ops, row)


def smallest_within(rows: list[dict[str, Any]], max_drop: float) -> int | None:
    """Index of the smallest curve row whose validation drop is within `max_drop` (None: no
    row is). The test columns never enter the choice."""
    within = [i for i, row in enumerate(rows) if row["val_drop"] <= max_drop]
    return min(within, key=lambda i: rows[i]["size_mb"]) if within else None


def choose(
    cfg: DictConfig,
    model: Any,
    tokenizer: Any,
    baseline: dict[str, float],
    evaluate: Callable[[Any, Any, str], float],
    importance_batches: Callable[[], Any],
    vocab_texts: Callable[[], list[str]],
    bench_texts: list[str],
    out_dir: Path,
    recover: Callable[[Any], float] | None = None,
    *,
    drop: Callable[[float, float], float],
) -> tuple[Candidate, list[dict[str, Any]]]:
    """The candidate that ships and the trade-off curve (empty without `export.prune`).

    `evaluate(forward, tokenizer, split)` gives the metric on "validation" or "test" in points;
    `baseline` holds the unpruned fp32 model's per split, `drop(reference, candidate)` says
    how much worse a candidate is (the task's headline direction). The choice uses validation only;
    test figures go into the curve for the reader. Each level is tried with the full
    vocabulary and, with `export.prune.vocab`, with the pruned one: new text splits into
    other (shorter) pieces there, which costs NER entity F1 points on names the corpus never
    saw, so the vocabulary is a trade-off axis like heads and neurons. The smallest int8
    model whose validation drop is within `export.max_metric_drop` wins; if none is, the
    least pruned candidate ships (and the parity gate refuses it).
    """
    ecfg = cfg.export
    pcfg = ecfg.get("prune")
    per_channel = ecfg.per_channel is True
    if not pcfg:
        return build_candidate(
            model,
            tokenizer,
            None,
            {"recover_seconds": 0.0},
            None,
            out_dir,
            int(ecfg.opset),
            per_channel,
        ), []
    scores = pruning.importance(model, importance_batches())
    keep_ids = pruning.used_token_ids(tokenizer, vocab_texts()) if pcfg.vocab else None
    if keep_ids is not None:
        log.info("vocabulary: keeping %d of %d tokens", len(keep_ids), len(tokenizer))
    candidates = []
    vocabularies = [None] if keep_ids is None else [None, keep_ids]
    for level in sorted(float(x) for x in pcfg.levels):
        pruned, kept = prune_level(model, level, scores, recover)  # one recovery per level
        for keep in vocabularies:
            cand = build_candidate(
                pruned, tokenizer, level, kept, keep, out_dir, int(ecfg.opset), per_channel
            )
            forward = ort_forward(session(cand.int8_path))
            for split, prefix in (("test", ""), ("validation", "val_")):
                cand.row[f"{prefix}metric"] = evaluate(forward, cand.tokenizer, split)
                cand.row[f"{prefix}drop"] = drop(baseline[split], cand.row[f"{prefix}metric"])
            measured = timing.measure(
                {"int8_onnx": forward},
                {"int8_onnx": cand.tokenizer},
                bench_texts,
                int(ecfg.seq_length),
                int(pcfg.bench.batch1_runs),
                int(pcfg.bench.batch32_runs),
                int(pcfg.bench.warmup),
            )["int8_onnx"]
            cand.row.update(
                throughput=measured["throughput"], latency_ms_p50=measured["latency_ms_p50"]
            )
            log.info("prune level %.2f: %s", level, cand.row)
            candidates.append(cand)
    index = smallest_within([c.row for c in candidates], float(ecfg.max_metric_drop))
    chosen = candidates[0 if index is None else index]
    for cand in candidates:
        if cand is not chosen:
            cand.fp32_path.unlink(missing_ok=True)
            cand.int8_path.unlink(missing_ok=True)
    return chosen, [c.row for c in candidates]
