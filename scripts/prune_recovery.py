"""Issue 31 item 2, measured: which pruning level and recovery keep a task's F1 in int8.

Reads the fine-tuned model and prepared splits of a project checkout (read only). Scores the
unpruned model once, computes head/neuron importance once, then for every setting (level,
recovery steps, distillation alpha/temperature, Hydra overrides of the recovery) prunes a copy,
recovers it, and scores on validation and test: the pruned fp32 PyTorch model and its int8
ONNX graph, per tensor and per channel. Int8 throughput at batch 32 is timed for every level
(blocks interleaved with the fp32 PyTorch baseline, so the ratio is side by side). Prints one
JSON document last.

    PYTHONPATH=$PWD/src python scripts/prune_recovery.py --task ner --work /tmp/prune \
        --setting 0.5:160 --setting 0.5:480 --setting 0.5:480:1.0:2.0

A setting is LEVEL:STEPS[:ALPHA[:TEMPERATURE]] (defaults: export.prune.distill).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from emergent.config import Paths, compose
from emergent.evaluation.predict import torch_forward
from emergent.export import timing
from emergent.export.pipeline import ExportInputs
from emergent.export.tradeoff import build_candidate, prune_level
from emergent.models import pruning
from emergent.serving.runtime import ort_forward, session
from emergent.tasks import get_task

log = logging.getLogger("prune_recovery")


def parse_setting(text: str, distill: Any) -> dict[str, float]:
    parts = text.split(":")
    level, steps = float(parts[0]), int(parts[1])
    alpha = float(parts[2]) if len(parts) > 2 else float(distill.alpha)
    temperature = float(parts[3]) if len(parts) > 3 else float(distill.temperature)
    return {"level": level, "steps": steps, "alpha": alpha, "temperature": temperature}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path.cwd())
    ap.add_argument("--task", default="ner")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--setting", action="append", required=True)
    ap.add_argument("--override", action="append", default=[], help="Hydra override")
    ap.add_argument("--runs32", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)

    base_cfg = compose(args.override)
    task = get_task(base_cfg, args.task)
    inp = ExportInputs.load(base_cfg, Paths.for_dvc(args.root), task)
    task = inp.task
    drop = task.headline.drop
    reference = {s: inp.evaluate(torch_forward(inp.model), inp.tokenizer, s) for s in inp.splits}
    log.info("unpruned fp32: %s", reference)
    scores = pruning.importance(inp.model, inp.importance_batches())
    texts = inp.test_texts
    rows = []
    for text in args.setting:
        setting = parse_setting(text, base_cfg.export.prune.distill)
        cfg = compose(
            [
                *args.override,
                f"export.prune.recover_steps={setting['steps']}",
                f"export.prune.distill.alpha={setting['alpha']}",
                f"export.prune.distill.temperature={setting['temperature']}",
            ]
        )
        inp.cfg = cfg
        recover = inp.recover_pruned if setting["steps"] > 0 else None
        pruned, kept = prune_level(inp.model, setting["level"], scores, recover)
        row: dict[str, Any] = {**setting, "recover_seconds": kept["recover_seconds"]}
        for split in ("validation", "test"):
            row[f"fp32_{split}"] = inp.evaluate(torch_forward(pruned), inp.tokenizer, split)
        tag = text.replace(":", "_").replace(".", "")
        out = args.work / tag
        out.mkdir(exist_ok=True)
        cand = build_candidate(
            pruned, inp.tokenizer, setting["level"], kept, None, out, 17, (False, True)
        )
        forwards = {}
        for name, pc in (("int8_pt", False), ("int8_pc", True)):
            forwards[name] = ort_forward(session(cand.int8_paths[pc]))
            for split in ("validation", "test"):
                row[f"{name}_{split}"] = inp.evaluate(forwards[name], inp.tokenizer, split)
        for name in ("fp32", "int8_pt", "int8_pc"):
            for split, short in (("validation", "val"), ("test", "test")):
                row[f"{name}_{short}_drop"] = drop(reference[split], row[f"{name}_{split}"])
        measured = timing.measure(
            {"fp32_torch": torch_forward(inp.model), "int8_pc": forwards["int8_pc"]},
            {"fp32_torch": inp.tokenizer, "int8_pc": inp.tokenizer},
            texts,
            int(cfg.export.seq_length),
            5,
            args.runs32,
            1,
        )
        row["int8_vs_torch_b32"] = (
            measured["int8_pc"]["throughput"] / measured["fp32_torch"]["throughput"]
        )
        row["size_mb"] = timing.size_mb(cand.int8_paths[True])
        log.info("setting %s: %s", text, json.dumps(row))
        rows.append(row)
    print(json.dumps({"reference": reference, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
