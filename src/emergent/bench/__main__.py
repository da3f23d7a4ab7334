"""`python -m emergent.bench {pretrain,inference} [key=value ...]`: run a benchmark, print
ratios, write `reports/bench/<name>.json`.

Overrides compose `conf/` like the CLI, e.g. `python -m emergent.bench pretrain model=tiny_bert`
or `python -m emergent.bench inference task=sentiment`.
"""

from __future__ import annotations

import argparse
import json
import sys

from emergent.cli import configure_logging, user_errors
from emergent.config import Paths, compose
from emergent.io import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emergent.bench", description=__doc__)
    parser.add_argument("bench", choices=("pretrain", "inference"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (key=value)")
    parser.add_argument("--rounds", type=int, default=3, help="pretrain: interleaved rounds")
    parser.add_argument("--steps", type=int, default=6, help="pretrain: steps per round")
    args = parser.parse_args(argv)
    configure_logging()
    cfg = compose(args.overrides)
    paths = Paths.for_dvc()
    with user_errors():
        if args.bench == "pretrain":
            from emergent.bench import pretrain

            result = pretrain.run(cfg, paths, rounds=args.rounds, steps=args.steps)
            rates = result["tokens_per_second"]
            unit = "tokens/s"
        else:
            from emergent.bench import inference
            from emergent.tasks import get_task

            result = inference.run(cfg, paths, task=get_task(cfg, str(cfg.task)))
            rates = {k: v["throughput"] for k, v in result["variants"].items()}
            unit = "sequences/s at batch 32"
    name = args.bench if args.bench == "pretrain" else f"inference_{cfg.task}"
    write_json(paths.out("reports", "bench", f"{name}.json"), result)
    print(json.dumps(result, indent=2))
    print(f"\n{name} ({result['model']}, {result['threads']} threads):")
    for key, value in rates.items():
        print(f"  {key:<16} {value:10.1f} {unit}")
    for key, value in result["ratios"].items():
        print(f"  {key:<36} {value:6.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
