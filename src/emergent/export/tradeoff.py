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

from emergent.export import timing
from emergent.export.onnx import export_onnx, fuse
from emergent.export.quantize import quantize
from emergent.models import pruning
from emergent.schema import ExportConfig
from emergent.serving.package import Variant
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
    "per_channel",
]


def int8_schemes(setting: bool | str) -> tuple[bool, ...]:
    """The int8 weight schemes `export.per_channel` asks to try (per tensor first: it wins a
    tie). auto tries both on every candidate, so the pruning level is chosen with each
    level's more accurate int8 model, not with per-tensor weights the package may not ship."""
    return (False, True) if setting == "auto" else (setting is True,)


@dataclass
class Candidate:
    """One pruning level: the pruned torch model, its tokenizer and its ONNX files (fp32 and
    one int8 graph per weight scheme tried, keyed by per_channel, until `pick_scheme`)."""

    level: float | None
    model: Any
    tokenizer: Any
    fp32_path: Path
    int8_paths: dict[bool, Path]
    fused_ops: dict[str, int]
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def per_channel(self) -> bool:
        """The int8 scheme kept (the only one left after `pick_scheme`)."""
        if len(self.int8_paths) != 1:
            raise RuntimeError("pick_scheme first: more than one int8 scheme is left")
        return next(iter(self.int8_paths))

    @property
    def int8_path(self) -> Path:
        return self.int8_paths[self.per_channel]

    def pick_scheme(self, score: Callable[[Any, Any], float]) -> Any:
        """Keep the int8 scheme with the best validation `score(forward, tokenizer)` (ties:
        the first tried), delete the others' graphs, and record it in the row. Returns the
        kept graph's forward function (its ONNX Runtime session stays open for reuse)."""
        forwards = {pc: ort_forward(session(path)) for pc, path in self.int8_paths.items()}
        scores = {pc: score(forward, self.tokenizer) for pc, forward in forwards.items()}
        best = max(scores, key=lambda pc: scores[pc])
        if len(scores) > 1:
            log.info("int8 validation by per_channel: %s", scores)
        for pc, path in list(self.int8_paths.items()):
            if pc != best:
                path.unlink(missing_ok=True)
                del self.int8_paths[pc]
        self.row.update(
            val_metric=scores[best], per_channel=best, size_mb=timing.size_mb(self.int8_path)
        )
        return forwards[best]


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
    schemes: tuple[bool, ...],
    skip_layer_norm: bool = False,
) -> Candidate:
    """Export a copy of the (already structurally pruned) `model` fused (`skip_layer_norm`:
    see `onnx.fuse`) and quantize it (once per int8 scheme in `schemes`), with its vocabulary
    cut to `keep_ids` first when given."""
    model = copy.deepcopy(model)
    if keep_ids is not None:
        tokenizer = pruning.prune_vocabulary(model, tokenizer, keep_ids)
    tag = ("full" if level is None else f"p{round(100 * level):02d}") + (
        "" if keep_ids is None else "v"
    )
    raw = export_onnx(model, out_dir / f"{tag}.raw.onnx", opset)
    fp32 = out_dir / f"{tag}.fp32.onnx"
    ops = fuse(raw, fp32, model.config, skip_layer_norm)
    raw.unlink()
    int8 = {pc: quantize(fp32, out_dir / f"{tag}.int8.pc{int(pc)}.onnx", pc) for pc in schemes}
    row = {
        "level": 0.0 if level is None else level,
        "heads_per_layer": pruning.heads_per_layer(model),
        "intermediate_size": model.config.intermediate_size,
        "vocab_size": model.config.vocab_size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        **kept,
    }
    return Candidate(level, model.eval(), tokenizer, fp32, int8, ops, row)


def smallest_within(rows: list[dict[str, Any]], max_drop: float) -> int | None:
    """Index of the smallest curve row whose validation drop is within `max_drop` (None: no
    row is). The test columns never enter the choice."""
    within = [i for i, row in enumerate(rows) if row["val_drop"] <= max_drop]
    return min(within, key=lambda i: rows[i]["size_mb"]) if within else None


@dataclass(frozen=True)
class Plan:
    """A candidate before it is built: its pruning level, the vocabulary it keeps (None: the
    full one) and its parameter count (what the scan orders by: an int8 graph's size follows
    it)."""

    level: float
    keep_ids: set[int] | None
    params: int


def plans(
    model: Any, levels: list[float], scores: tuple[Any, Any], keep_ids: set[int] | None
) -> list[Plan]:
    """Every (level, vocabulary) candidate with its parameter count, smallest first (ties: the
    lower level, then the full vocabulary). Structural pruning of a copy is cheap (slicing);
    only the recovery that follows, run once per level when a level is built, costs time."""
    embedding = model.get_input_embeddings()
    found = []
    for level in sorted(levels):
        shaped = copy.deepcopy(model)
        pruning.prune_structure(shaped, scores[0], scores[1], level)
        params = sum(p.numel() for p in shaped.parameters())
        del shaped
        found.append(Plan(level, None, params))
        if keep_ids is not None:
            cut = (embedding.num_embeddings - len(keep_ids)) * embedding.embedding_dim
            found.append(Plan(level, keep_ids, params - cut))
    return sorted(found, key=lambda plan: plan.params)  # stable: the ties keep that order


def scan(
    ordered: list[Plan],
    build: Callable[[Plan], dict[str, Any]],
    max_drop: float,
    until_chosen: bool,
) -> list[dict[str, Any]]:
    """Build and score candidates in `ordered` (smallest first) with `build(plan) -> curve
    row`; with `until_chosen`, stop at the first whose validation drop is within `max_drop`:
    it is the smallest such candidate, so the rows not built could not have changed the
    choice (`smallest_within`), only filled the trade-off plot."""
    rows = []
    for plan in ordered:
        rows.append(build(plan))
        if until_chosen and rows[-1]["val_drop"] <= max_drop:
            break
    return rows


def choose(
    ecfg: ExportConfig,
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
    least pruned candidate ships (and the parity gate refuses it). Candidates are built
    smallest first; `export.prune.scan: until_chosen` stops at the first within the drop (the
    same package as `all`, which also builds the larger ones for the plot).
    """
    pcfg = ecfg.prune
    schemes = int8_schemes(ecfg.per_channel)
    if not pcfg:
        return build_candidate(
            model,
            tokenizer,
            None,
            {"recover_seconds": 0.0},
            None,
            out_dir,
            ecfg.opset,
            schemes,
            ecfg.skip_layer_norm,
        ), []
    scores = pruning.importance(model, importance_batches())
    keep_ids = pruning.used_token_ids(tokenizer, vocab_texts()) if pcfg.vocab else None
    if keep_ids is not None:
        log.info("vocabulary: keeping %d of %d tokens", len(keep_ids), len(tokenizer))
    levels: dict[float, tuple[Any, dict[str, Any]]] = {}  # one recovery per level, when built
    candidates: list[Candidate] = []

    def build(plan: Plan) -> dict[str, Any]:
        if plan.level not in levels:
            levels[plan.level] = prune_level(model, plan.level, scores, recover)
        pruned, kept = levels[plan.level]
        cand = build_candidate(
            pruned,
            tokenizer,
            plan.level,
            kept,
            plan.keep_ids,
            out_dir,
            ecfg.opset,
            schemes,
            ecfg.skip_layer_norm,
        )
        forward = cand.pick_scheme(lambda f, tok: evaluate(f, tok, "validation"))
        cand.row["metric"] = evaluate(forward, cand.tokenizer, "test")
        for split, prefix in (("test", ""), ("validation", "val_")):
            cand.row[f"{prefix}drop"] = drop(baseline[split], cand.row[f"{prefix}metric"])
        measured = timing.measure(
            {Variant.INT8_ONNX: forward},
            {Variant.INT8_ONNX: cand.tokenizer},
            bench_texts,
            ecfg.seq_length,
            pcfg.bench.batch1_runs,
            pcfg.bench.batch32_runs,
            pcfg.bench.warmup,
        )[Variant.INT8_ONNX]
        cand.row.update(
            throughput=measured["throughput"], latency_ms_p50=measured["latency_ms_p50"]
        )
        log.info("prune level %.2f: %s", plan.level, cand.row)
        candidates.append(cand)
        return cand.row

    ordered = plans(model, pcfg.levels, scores, keep_ids)
    scan(ordered, build, ecfg.max_metric_drop, pcfg.scan == "until_chosen")
    # the curve reads by level, full vocabulary first (the order `all` always wrote)
    candidates.sort(key=lambda c: (c.row["level"], -c.row["vocab_size"]))
    index = smallest_within([c.row for c in candidates], ecfg.max_metric_drop)
    chosen = candidates[0 if index is None else index]
    for cand in candidates:
        if cand is not chosen:
            cand.fp32_path.unlink(missing_ok=True)
            cand.int8_path.unlink(missing_ok=True)
    return chosen, [c.row for c in candidates]
