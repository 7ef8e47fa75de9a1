"""Token buckets per API key for creating renders (in-process: each replica enforces its own limit)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vibecraft_api.errors import RateLimited


@dataclass
class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; a request takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key id; raises RateLimited (429 with Retry-After) when the bucket is empty."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 what: str = "new videos") -> None:
        self.what = what  # for the 429's detail
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def check(self, key_id: str) -> None:
        now = self.clock()
        bucket = self.buckets.get(key_id)
        if bucket is None:
            bucket = self.buckets[key_id] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(now)
        if wait > 0:
            raise RateLimited(wait, self.what)

    def refund(self, key_id: str) -> None:
        """Give back the token of a request that created nothing."""
        bucket = self.buckets.get(key_id)
        if bucket is not None:
            bucket.tokens = min(bucket.burst, bucket.tokens + 1.0)
