"""Service load test (`make loadtest`): with and without micro-batching, side by side.

  python -m emergent.bench serve [--task sentiment] [--seconds 30] [--levels 1 8 32]
                                 [key=value ...]   # serve.* overrides for both servers

Starts the server on 127.0.0.1 twice (serve.batching.max_batch_size as configured, then 1),
drives each with a bounded asyncio (aiohttp) client at each concurrency level for a fixed time,
and writes requests/s, latency percentiles, errors by status and the mean batch size (from the
server's own histogram) to reports/bench/serve.json with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

from emergent.serving.settings import server_stack

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "fma")


def cpu_info() -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"model name\s*:\s*(.+)", text)
    flags = re.search(r"flags\s*:\s*(.+)", text)
    have = set(flags.group(1).split()) if flags else set()
    return {
        "model": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "flags": [f for f in FLAGS if f in have],
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (also the tests' helper)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_texts(root: Path, n: int = 200) -> list[str]:
    """Short texts (~20 words): review snippets from the prepared test split if present."""
    path = root / "data" / "prepared" / "sentiment" / "test.jsonl"
    texts = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            words = json.loads(line).get("text", "").split()
            if len(words) >= 12:
                texts.append(" ".join(words[:20]))
            if len(texts) >= n:
                break
    return texts or [
        f"a film number {i} that is neither great nor terrible, but fine" for i in range(n)
    ]


def metric_sum_count(text: str, name: str, task: str) -> tuple[float, float]:
    def value(kind: str) -> float:
        m = re.search(rf'^{name}_{kind}{{task="{task}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("sum"), value("count")


async def drive(
    url: str, task: str, texts: list[str], concurrency: int, seconds: float, max_requests: int
) -> dict[str, Any]:
    """`concurrency` closed-loop clients for `seconds` (or `max_requests` in all).

    aiohttp rather than httpx: the client shares the two cores with the server, and httpx's
    per-request cost was a large part of what the server measured against itself.
    """
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds
    sent = 0
    path = f"{url}/v1/{task}/predict"
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal sent
        i = offset
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            i += 1
            start = time.perf_counter()
            try:
                async with session.post(path, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    statuses[str(r.status)] += 1
                    if r.status == 200:
                        latencies.append(time.perf_counter() - start)
            except (aiohttp.ClientError, TimeoutError) as err:
                statuses[type(err).__name__] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def batch_sizes() -> tuple[float, float]:
            async with session.get(f"{url}/metrics") as r:
                return metric_sum_count(await r.text(), "emergent_batch_size", task)

        before = await batch_sizes()
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, k * 7) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = await batch_sizes()
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    batches = after[1] - before[1]
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": int(sum(statuses.values())),
        "ok": int(statuses.get("200", 0)),
        "requests_per_s": round(statuses.get("200", 0) / elapsed, 2),
        "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)},
        "errors": {k: v for k, v in statuses.items() if k != "200"},
        "mean_batch_size": round((after[0] - before[0]) / batches, 2) if batches else None,
    }


def model_ceiling(
    export_dir: Path, task: str, texts: list[str], threads: int, batch_size: int, seconds: float
) -> dict[str, Any]:
    """Texts/s of the model alone (in this process, no HTTP) at batch 1 and at `batch_size`:
    what batching can gain at most on this CPU, next to what the service gains."""
    from emergent.serving.predictor import Predictor

    predictor = Predictor(export_dir, task=task, threads=threads)
    rates = {}
    for size in (1, batch_size):
        predictor.predict(texts[:size])  # warm-up
        done, i, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            batch = [texts[(i + j) % len(texts)] for j in range(size)]
            predictor.predict(batch)
            done, i = done + size, i + size
        rates[size] = done / (time.perf_counter() - started)
    return {
        "threads": threads,
        "texts_per_s_batch1": round(rates[1], 1),
        f"texts_per_s_batch{batch_size}": round(rates[batch_size], 1),
        "batching_gain": round(rates[batch_size] / rates[1], 2),
    }


def start_server(port: int, overrides: list[str], log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "emergent", "serve", f"serve.port={port}", *overrides]
    with log_path.open("w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    m = re.search(r"VmRSS:\s+(\d+) kB", status.read_text()) if status.is_file() else None
    return round(int(m.group(1)) / 1024, 1) if m else float("nan")


def run_mode(
    name: str, overrides: list[str], args: argparse.Namespace, texts: list[str], workdir: Path
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, overrides, workdir / f"server_{name}.log")
    try:
        startup = wait_ready(url, proc)
        levels = [
            asyncio.run(drive(url, args.task, texts, c, args.seconds, args.max_requests))
            for c in args.levels
        ]
        models = httpx.get(f"{url}/v1/models", timeout=5).json()
        return {
            "overrides": overrides,
            "startup_s": round(startup, 2),
            "rss_mb": rss_mb(proc.pid),
            "torch_in_server": models["torch_loaded"],
            "levels": levels,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emergent.bench serve", description=__doc__)
    parser.add_argument("overrides", nargs="*", help="serve.* overrides for both servers")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per level")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="reports/bench/serve.json")
    args = parser.parse_args(argv)
    root = Path.cwd()
    workdir = root / "outputs" / "loadtest"
    workdir.mkdir(parents=True, exist_ok=True)
    texts = sample_texts(root)
    common = [
        f"serve.tasks=[{args.task}]",
        "serve.limits.rate_per_second=0",  # the designed 429 is tested elsewhere
        f"serve.store.path={workdir / 'requests.db'}",
        f"hydra.run.dir={workdir / 'hydra'}",
        *args.overrides,
    ]
    result: dict[str, Any] = {
        "cpu": cpu_info(),
        "server": server_stack(),
        "client": f"aiohttp {aiohttp.__version__}",
        "task": args.task,
        "texts": len(texts),
        "mean_words": round(float(np.mean([len(t.split()) for t in texts])), 1),
    }
    modes = {
        "batched": [*common, f"serve.batching.max_batch_size={args.batch_size}"],
        "unbatched": [*common, "serve.batching.max_batch_size=1"],
    }
    result["modes"] = {}
    for name, overrides in modes.items():
        print(f"{name}: {' '.join(overrides)}", file=sys.stderr)
        result["modes"][name] = run_mode(name, overrides, args, texts, workdir)
    from emergent.config import compose

    serve = compose([o for o in args.overrides if o.startswith("serve.")]).serve
    export_root = Path(serve.export_root) if serve.export_root else root / "models" / "export"
    result["model_only"] = model_ceiling(
        export_root / args.task, args.task, texts, int(serve.threads), args.batch_size, 10.0
    )
    b, u = (result["modes"][m]["levels"] for m in ("batched", "unbatched"))
    result["ratios"] = {
        f"batched_vs_unbatched_rps_c{x['concurrency']}": round(
            x["requests_per_s"] / y["requests_per_s"], 2
        )
        for x, y in zip(b, u, strict=True)
        if y["requests_per_s"]
    }
    out = root / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    for name, mode in result["modes"].items():
        for lv in mode["levels"]:
            print(
                f"{name:>9} c={lv['concurrency']:<3} {lv['requests_per_s']:8.1f} req/s  "
                f"p50 {lv['latency_ms']['p50']:7.1f} ms  p95 {lv['latency_ms']['p95']:7.1f} ms  "
                f"p99 {lv['latency_ms']['p99']:7.1f} ms  batch {lv['mean_batch_size']}  "
                f"errors {lv['errors']}",
                file=sys.stderr,
            )
    for k, v in result["ratios"].items():
        print(f"  {k}: {v}x", file=sys.stderr)
    print(f"  model alone (no HTTP): {result['model_only']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
