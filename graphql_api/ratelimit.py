"""A token bucket per API key, in the process: `rate` requests a second on average, bursts of `burst`.

At scale this is one line of defence among several: each process counts only what it serves, so a
deployment of N processes admits up to N times the rate. Put a shared limit in front of the servers too.
"""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, *, rate: float, burst: int, max_keys: int = 100_000, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def admit(self, key: str) -> float:
        """0 when the request may go ahead (and takes its token), else the seconds until it could."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            # Full buckets are the default: forgetting them loses nothing.
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst}
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0
