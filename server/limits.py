"""Per-caller rate limits: a token bucket for each caller id, its size and refill set by role
(the policy table's default rates, which `vimark serve --rate-limit` overrides).

A call costs one token (a VerifyBatch one per certificate). An empty bucket answers
RESOURCE_EXHAUSTED with the delay after which the call would be accepted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from vimark.client.errors import ResourceExhausted
from vimark.server.auth import Caller
from vimark.server.policy import Rate, Role

_MAX_BUCKETS = 200_000  # beyond this, buckets that have refilled completely are forgotten


class RateLimiter:
    def __init__(self, rates: Mapping[Role, Rate], clock: Callable[[], float] = time.monotonic) -> None:
        self.rates = dict(rates)
        self._clock = clock
        self._buckets: dict[tuple[Role, str], tuple[float, float]] = {}  # (role, caller id) -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: Caller, cost: int = 1) -> None:
        """Spend `cost` tokens of the caller's bucket, or raise ResourceExhausted."""
        rate = self.rates.get(caller.role)
        if rate is None:
            return
        if cost > rate.burst:
            raise ResourceExhausted(
                f"a call of {cost} items exceeds the {caller.role.value} burst of {rate.burst:g}: send smaller batches",
                retry_after=0.0,
            )
        now = self._clock()
        with self._lock:
            bucket = (caller.role, caller.caller_id)  # ids are unique within a role, not across roles
            tokens, at = self._buckets.get(bucket, (rate.burst, now))
            tokens = min(rate.burst, tokens + (now - at) * rate.per_second)
            if tokens < cost:
                self._buckets[bucket] = (tokens, now)
                wait = (min(cost, rate.burst) - tokens) / rate.per_second
                raise ResourceExhausted(
                    f"rate limit of {caller.role.value} caller {caller.caller_id}: {rate.per_second:g}/s, "
                    f"bursts of {rate.burst:g}; retry in {wait:.2f} s",
                    retry_after=wait,
                )
            self._buckets[bucket] = (tokens - cost, now)
            if len(self._buckets) > _MAX_BUCKETS:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """A bucket idle long enough to be full again is the same as no bucket at all."""
        idle = max(r.burst / r.per_second for r in self.rates.values())
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < idle}
