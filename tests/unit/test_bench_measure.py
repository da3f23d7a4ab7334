"""The inference benchmark's schedule: every run made, variants in blocks, rounds alternate."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from emergent.export.bench import measure


class FakeTokenizer:
    def __call__(self, texts: list[str], **kwargs: object) -> dict[str, np.ndarray]:
        n = int(kwargs["max_length"])  # type: ignore[call-overload]
        return {"input_ids": np.ones((len(texts), n)), "attention_mask": np.ones((len(texts), n))}


def test_variants_run_in_alternating_blocks_and_make_every_run() -> None:
    calls: list[tuple[str, int]] = []

    def forward(name: str) -> Callable[[dict], None]:
        return lambda batch: calls.append((name, len(batch["input_ids"])))

    names = ["fp32_torch", "int8_onnx"]
    result = measure(
        {n: forward(n) for n in names},
        {n: FakeTokenizer() for n in names},
        ["a text", "another"],
        seq_length=8,
        runs1=7,
        runs32=4,
        warmup=1,
        rounds=3,
    )
    assert set(result) == set(names)
    assert all(
        set(r) == {"latency_ms_p50", "latency_ms_p95", "throughput"} for r in result.values()
    )
    for name in names:  # 7 + 4 timed runs, plus one b1 and one b32 warm-up call per block
        assert sum(1 for n, b in calls if n == name and b == 1) == 7 + 3
        assert sum(1 for n, b in calls if n == name and b == 32) == 4 + 3
    blocks = [name for name, _ in itertools.groupby(n for n, _ in calls)]
    assert blocks == names * 3
