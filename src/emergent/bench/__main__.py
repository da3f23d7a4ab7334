"""`python -m emergent.bench {pretrain,finetune,inference,incontext,serve,startup} [key=value
...]`: run a benchmark, print ratios, write `reports/bench/<name>.json`.

Overrides compose `conf/` like the CLI, e.g. `python -m emergent.bench pretrain model=tiny_bert`
or `python -m emergent.bench inference task=sentiment`. `serve` (the service under load, with
and without micro-batching) takes its own options: `python -m emergent.bench serve --help`, and
so does `startup` (each DVC stage process's start-up, phase by phase: `... startup --help`).
"""

from __future__ import annotations

import argparse
import json
import sys

from emergent.cli import configure_logging, user_errors
from emergent.config import Paths, compose
from emergent.hardware import cpu_facts
from emergent.io import write_json
from emergent.schema import validate_config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # a load test of the running service: options of its own
        from emergent.bench import serve

        return serve.main(argv[1:])
    if argv[:1] == ["startup"]:  # fresh processes per stage: options of its own, no config
        from emergent.bench import startup

        return startup.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m emergent.bench", description=__doc__)
    parser.add_argument(
        "bench", choices=("pretrain", "finetune", "inference", "incontext", "serve", "startup")
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (key=value)")
    parser.add_argument("--rounds", type=int, default=3, help="pretrain: interleaved rounds")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="pretrain: steps per round (6); finetune: steps (40)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    cfg = compose(args.overrides)
    paths = Paths.for_dvc()
    with user_errors():
        settings = validate_config(cfg)  # a bad key: one line, before any timing starts
        if args.bench == "pretrain":
            from emergent.bench import pretrain

            result = pretrain.run(settings, paths, rounds=args.rounds, steps=args.steps or 6)
            rates = result["tokens_per_second"]
            unit = "tokens/s"
        elif args.bench == "finetune":
            from emergent.bench import finetune
            from emergent.tasks import get_task

            task = get_task(cfg, str(settings.task))
            result = finetune.run(cfg, settings, paths, task, steps=args.steps or 40)
            rates = result["tokens_per_second"]
            unit = "tokens/s"
        elif args.bench == "incontext":
            from emergent.bench import incontext

            result = incontext.run(settings, paths, rounds=args.rounds)
            rates = result["rates"]
            unit = "texts/s"
        else:
            from emergent.bench import inference
            from emergent.tasks import get_task

            result = inference.run(settings, paths, task=get_task(cfg, str(settings.task)))
            rates = {k: v["throughput"] for k, v in result["variants"].items()}
            unit = "sequences/s at batch 32"
    result["cpu"] = cpu_facts()  # figures from different machines stay apart
    name = args.bench if args.bench == "pretrain" else f"{args.bench}_{settings.task}"
    if args.bench == "incontext":
        name = f"incontext_{settings.fewshot.task}"
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
