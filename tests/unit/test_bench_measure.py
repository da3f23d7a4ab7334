"""The inference benchmark's schedule: every run made, variants in blocks, rounds alternate."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from emergent.export.timing import measure


class FakeEncoding(dict):
    """What a fast tokenizer returns, as far as `synthetic_batch` reads it: one word per text."""

    def word_ids(self, i: int) -> list[int | None]:
        return [0] * self["input_ids"].shape[1]


class FakeTokenizer:
    def __call__(self, texts: list[str], **kwargs: object) -> FakeEncoding:
        n = int(kwargs["max_length"])  # type: ignore[call-overload]
        ones = np.ones((len(texts), n))
        offsets = np.zeros((len(texts), n, 2), dtype=np.int64)
        return FakeEncoding(input_ids=ones, attention_mask=ones, offset_mapping=offsets)


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
