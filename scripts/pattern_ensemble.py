"""Issue 28, measured once: PET's pattern ensemble on the instruct causal LM.

The lab's prompt fine-tuning (the `experiment=fewshot_lm` recipe: every weight, the best dev
step kept) is run on the same k-shot sets under several prompt patterns, and the patterns' label
log-probabilities are averaged at test time (Schick & Schuetze 2021). Printed: zero-shot and
fine-tuned accuracy of each pattern and of the average, per seed, and the paired intervals of
the averaged model against the first pattern's zero-shot and fine-tuned runs, over the same
test texts the lab uses.

    PYTHONPATH=$PWD/src python scripts/pattern_ensemble.py --seeds 1 2 3

About 5 min a seed on 2 cores. Findings: docs/results.md ("An ensemble of three prompt
patterns"); the ensemble is not a lab method, since it bought half a point.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from omegaconf import OmegaConf

from emergent.config import compose, project_root
from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot.backbones import preset_model
from emergent.fewshot.causal_lab import CausalLab, build_causal_lab
from emergent.fewshot.demonstrations import sample_per_class
from emergent.fewshot.labs import fewshot_data
from emergent.fewshot.report import paired_comparisons
from emergent.hardware import cpu_facts, resolve_precision
from emergent.schema import validate_config

PRESET = "smollm2_135m_instruct"
# (template, verbalizer): the preset's, LM-BFF's manual MR template, and a yes/no question
PATTERNS = [
    ("Review: {text}\nSentiment: {mask}", {"negative": "negative", "positive": "positive"}),
    ("{text} It was {mask}", {"negative": "terrible", "positive": "great"}),
    (
        "Movie review: {text}\nDid the critic like the movie? {mask}",
        {"negative": "No", "positive": "Yes"},
    ),
]


def labs(overrides: list[str]) -> tuple[list[CausalLab], Any]:
    """One lab per pattern over the same data, all sharing one loaded backbone."""
    built, model, settings = [], None, None
    for template, words in PATTERNS:
        cfg = compose(["experiment=fewshot_lm", *overrides])
        prompt = {"template": template, "verbalizer": words}
        OmegaConf.update(cfg, f"fewshot.causal_prompts.{cfg.fewshot.task}", prompt, merge=False)
        settings = validate_config(cfg)
        data, _ = fewshot_data(cfg, settings, project_root() / settings.data.prepared_dir)
        lab = build_causal_lab(preset_model(PRESET, PRESET), settings.fewshot, data, None, PRESET)
        model = model if model is not None else lab.load()
        lab._model = model  # one de-quantized backbone for every pattern
        built.append(lab)
    return built, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. fewshot.test_size=200)")
    args = parser.parse_args()
    patterns, settings = labs(args.overrides)
    first, data = patterns[0], patterns[0].data
    gold = torch.tensor([first.label_index(e) for e in data.test])
    rows: list[dict[str, Any]] = []

    def record(method: str, seed: int | None, logprobs: torch.Tensor) -> float:
        correct = (logprobs.argmax(-1) == gold).int().tolist()
        rows.append(
            {"model": "smollm2", "method": method, "k": args.k, "seed": seed, "correct": correct}
        )
        return round(100 * sum(correct) / len(correct), 1)

    report: dict[str, Any] = {"cpu": cpu_facts(), "patterns": [p[0] for p in PATTERNS]}
    bf16 = resolve_precision(settings.fewshot.precision).startswith("bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        zero = [
            lab.score(lab.load(), [r["input_ids"] for r in lab._rows(data.test)])
            .float()
            .log_softmax(-1)  # each pattern's two label words as a distribution
            for lab in patterns
        ]
        report["zero_shot"] = [record(f"zero{i}", None, lp) for i, lp in enumerate(zero)]
        report["zero_shot_averaged"] = record("zero_avg", None, torch.stack(zero).mean(0))
        for seed in args.seeds:
            shots = sample_per_class(data.train, data.labels, args.k, seed)
            dev = sample_per_class(data.dev_pool, data.labels, args.k, seed)
            tuned, dev_best = [], []
            for lab in patterns:
                dev_accuracy = lab._dev_accuracy(lab._rows(dev, (), seed + 1))
                steps = lab.train["steps"]
                with lab._fine_tuned(lab._rows(shots), dev_accuracy, seed, steps) as (model, best):
                    test = [r["input_ids"] for r in lab._rows(data.test)]
                    tuned.append(lab.score(model, test).float().log_softmax(-1))
                dev_best.append(best["best_dev_accuracy"])
            report[f"seed {seed}"] = {
                "fine-tuned": [record(f"tuned{i}", seed, lp) for i, lp in enumerate(tuned)],
                "averaged": record("tuned_avg", seed, torch.stack(tuned).mean(0)),
                "best dev accuracy": dev_best,
            }
            print(json.dumps({f"seed {seed}": report[f"seed {seed}"]}), flush=True)
    pairs = [
        {"a": f"smollm2/tuned_avg/{args.k}", "b": f"smollm2/zero0/{args.k}"},
        {"a": f"smollm2/tuned_avg/{args.k}", "b": f"smollm2/tuned0/{args.k}"},
    ]
    report["paired"] = paired_comparisons(rows, pairs, Bootstrap.from_settings(settings))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
