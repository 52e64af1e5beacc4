"""Garbage-collection pauses, timed with `gc.callbacks`: a collection stops every Python thread, so
its length lands in the tail of whatever calls are in flight.

The callback only appends (a deque append holds no lock that the interrupted thread might hold);
a thread drains it every second into the `vimark_gc_pause_seconds` histogram and logs each pause
over `LOGGED_SECONDS` (load/bench/verify.py reads those lines from the server's log).
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger("vimark.server")

LOGGED_SECONDS = 0.005


def freeze_what_start_up_made() -> None:
    """Hide from the collector every object alive once the index is loaded (the modules, the
    servicers, the index's own): they live as long as the process, and a full collection walked
    them all, about 100,000 objects and 45 ms each time on this machine, several times a minute
    under load. Frozen (gc.freeze), a full collection walks only what serving made since. For a
    process that serves and nothing else (`vimark serve`): frozen garbage is never collected."""
    gc.collect()
    gc.freeze()
# The log line the benchmark looks for: "gc pause 12.3 ms (generation 2, 1.9 ms on the CPU)". The
# pause is wall time (what a call waits); the CPU time tells a long collection from one the kernel
# preempted (two processes per core in a benchmark on this 2-core machine).
LOG_PREFIX = "gc pause"


class GcPauses:
    def __init__(self, histogram: Any, interval: float = 1.0) -> None:
        self._histogram = histogram  # labelled by generation
        for generation in range(3):  # every series shown from the start, at zero
            histogram.labels(str(generation))
        self._interval = interval
        self._pending: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=100_000)
        self._started = self._started_cpu = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started, self._started_cpu = time.perf_counter(), time.thread_time()
        else:
            cpu = time.thread_time() - self._started_cpu
            self._pending.append((time.perf_counter() - self._started, cpu, info["generation"]))

    def start(self) -> None:
        gc.callbacks.append(self._callback)
        self._thread = threading.Thread(target=self._run, name="vimark-gc-pauses", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drain()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._drain()

    def _drain(self) -> None:
        pending = self._pending
        while pending:
            seconds, cpu, generation = pending.popleft()
            self._histogram.labels(str(generation)).observe(seconds)
            if seconds > LOGGED_SECONDS:
                log.warning(
                    "%s %.1f ms (generation %d, %.1f ms on the CPU)", LOG_PREFIX, seconds * 1e3, generation, cpu * 1e3
                )
