"""Send texts to a running service: `python -m emergent.serving.client URL TASK FILE [--key K]`.

FILE: JSONL with a `text` field, CSV with a `--column`, or TXT (one text per line); `.bz2`/`.gz`
read transparently. Prints one JSON line of predictions per text. Used for the drift demo.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import httpx

from emergent.data.sources import read_text


def load_texts(path: Path, column: str, limit: int) -> list[str]:
    text = read_text(path, label=str(path))
    name = path.name.removesuffix(".bz2").removesuffix(".gz")
    if name.endswith(".jsonl"):
        rows = [str(json.loads(line)[column]) for line in text.splitlines() if line.strip()]
    elif name.endswith(".csv"):
        rows = [str(r[column]) for r in csv.DictReader(io.StringIO(text))]
    else:
        rows = text.splitlines()
    return [r for r in rows if r.strip()][:limit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emergent.serving.client", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("task")
    parser.add_argument("file", type=Path)
    parser.add_argument("--column", default="text")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--key", default=None, help="API key (X-API-Key)")
    args = parser.parse_args(argv)
    texts = load_texts(args.file, args.column, args.limit)
    headers = {"X-API-Key": args.key} if args.key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        for start in range(0, len(texts), args.batch):
            r = client.post(
                f"/v1/{args.task}/predict", json={"texts": texts[start : start + args.batch]}
            )
            if r.status_code != 200:
                print(f"error: {r.status_code} {r.json().get('detail')}", file=sys.stderr)
                return 1
            for row in r.json()["predictions"]:
                print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
