"""Per-key request rate limiting: a token bucket per key id (429 with Retry-After)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    """`rate` requests per second on average, bursts up to `burst`; rate <= 0 turns it off."""

    rate: float
    burst: float
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def acquire(self, key_id: str, now: float | None = None) -> float:
        """0.0 when the request may go ahead, else the seconds until it may (Retry-After)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self.buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.rate


def retry_after(seconds: float) -> str:
    """Retry-After takes whole seconds; never advertise 0 (clients would hammer)."""
    return str(max(1, math.ceil(seconds)))
