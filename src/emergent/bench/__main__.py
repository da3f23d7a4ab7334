"""`python -m emergent.bench pretrain [key=value ...]`: run a benchmark, print ratios, write JSON.

Results go to `reports/bench/<name>.json`. Overrides compose `conf/` like the CLI, e.g.
`python -m emergent.bench pretrain model=tiny_bert pretrain.batch_size=16`.
"""

from __future__ import annotations

import argparse
import json
import sys

from emergent.cli import configure_logging
from emergent.config import Paths, compose
from emergent.io import write_json

BENCHES = ("pretrain",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emergent.bench", description=__doc__)
    parser.add_argument("bench", choices=BENCHES)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (key=value)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per round (2 are warm-up)")
    args = parser.parse_args(argv)
    configure_logging()
    cfg = compose(args.overrides)
    paths = Paths.for_dvc()
    from emergent.bench import pretrain

    result = pretrain.run(cfg, paths, rounds=args.rounds, steps=args.steps)
    write_json(paths.out("reports", "bench", f"{args.bench}.json"), result)
    print(json.dumps(result, indent=2))
    print(f"\n{args.bench} ({result['model']}, {result['threads']} threads):")
    for name, value in result["tokens_per_second"].items():
        print(f"  {name:<16} {value:10.0f} tokens/s")
    for name, value in result["ratios"].items():
        print(f"  {name:<28} {value:6.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
