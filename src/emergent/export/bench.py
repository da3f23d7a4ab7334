"""Latency and throughput of forward functions, measured interleaved in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch


def synthetic_batch(
    tokenizer: Any, texts: list[str], batch_size: int, seq_length: int
) -> dict[str, np.ndarray]:
    """Real text, tokenized and padded/truncated to exactly `seq_length` tokens."""
    chosen = [texts[i % len(texts)] for i in range(batch_size)]
    enc = tokenizer(
        chosen, truncation=True, max_length=seq_length, padding="max_length", return_tensors="np"
    )
    return {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
    }


def measure(
    forwards: Mapping[str, Callable[[dict], Any]],
    batch1: dict,
    batch32: dict,
    runs1: int,
    runs32: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    """Per variant: latency p50/p95 (ms) at batch 1, throughput (sequences/s) at batch 32.

    Variants take turns run by run, so a change in machine load hits all of them alike.
    """
    torch_batches = {
        key: {k: torch.as_tensor(v) for k, v in b.items()}
        for key, b in (("b1", batch1), ("b32", batch32))
    }
    lat: dict[str, list[float]] = {k: [] for k in forwards}
    thr: dict[str, list[float]] = {k: [] for k in forwards}

    def call(name: str, fn: Callable, key: str) -> float:
        batch = (
            torch_batches[key] if name.endswith("torch") else (batch1 if key == "b1" else batch32)
        )
        start = time.perf_counter()
        with torch.inference_mode():
            fn(batch)
        return time.perf_counter() - start

    for name, fn in forwards.items():
        for _ in range(warmup):
            call(name, fn, "b1")
            call(name, fn, "b32")
    for _ in range(runs1):
        for name, fn in forwards.items():
            lat[name].append(call(name, fn, "b1") * 1000)
    for _ in range(runs32):
        for name, fn in forwards.items():
            thr[name].append(len(batch32["input_ids"]) / call(name, fn, "b32"))
    return {
        name: {
            "latency_ms_p50": float(np.percentile(lat[name], 50)),
            "latency_ms_p95": float(np.percentile(lat[name], 95)),
            "throughput": float(statistics.median(thr[name])),
        }
        for name in forwards
    }
