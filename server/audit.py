"""The audit log: who verified or looked up which plate, when, and what they were told.

Recording is on the hot path of Verify, so `AuditLog.record` only appends a tuple to a deque
(atomic under the GIL: no lock, no I/O, no allocation beyond the tuple). One background thread
takes the events in batches and writes each batch in one transaction. While the database is down
the events stay in memory and the batch is retried with backoff; the oldest are dropped only when
more than `max_backlog` are waiting (counted in vimark_audit_dropped, logged once per outage).
`close()` writes what is still buffered, within a timeout.

Which roles are audited is the policy table's (policy.py: `audited`); this module records what it is given.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Protocol

from vimark.server.auth import Caller
from vimark.server.metrics import Metrics
from vimark.server.records import AuditEvent

log = logging.getLogger("vimark.server")

_MAX_RETRY_INTERVAL = 5.0  # seconds between attempts while the database stays down

# What record() appends: (at, caller, rpc, plate_type, plate_number, verdict, serial). A plain
# tuple, because building it is the whole cost of recording; AuditEvents are made off the hot path.
_Pending = tuple[float, Caller, str, str, str, str, int]
BatchItem = tuple[str, str, str, int]  # (plate_type, plate_number, verdict, serial) for record_many


class AuditSink(Protocol):
    """What the audit log needs of the store."""

    def append_audit(self, events: Sequence[AuditEvent]) -> None: ...


class AuditLog:
    """Buffers audit events and writes them in batches from one background thread.

    At most `max_backlog` events wait in memory besides the batch being written; past that the
    oldest are dropped. Events recorded after `close()` are not written."""

    def __init__(
        self,
        store: AuditSink,
        metrics: Metrics,
        *,
        flush_interval: float = 0.2,
        batch_size: int = 500,
        max_backlog: int = 1_000_000,
    ) -> None:
        if flush_interval <= 0 or batch_size < 1 or max_backlog < 1:
            raise ValueError("flush_interval, batch_size and max_backlog must be positive")
        self._store = store
        self._metrics = metrics
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_backlog = max_backlog
        self._queue: deque[_Pending] = deque(maxlen=max_backlog)
        self._in_hand: list[AuditEvent] = []  # the batch being written (and retried): the oldest events
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dropping = False  # an outage overflowed the backlog (logged once per outage)
        self._failures = 0  # consecutive failed writes (writer thread only)
        metrics.audit_backlog.set_function(self.backlog)

    # -- the hot path ------------------------------------------------------------------------
    def record(
        self, caller: Caller, rpc: str, plate_type: str, plate_number: str, verdict: str, serial: int, at: float
    ) -> None:
        """Accept one event (`at` in Unix seconds); never blocks and never raises for a database."""
        queue = self._queue
        if len(queue) == self._max_backlog:  # full: the append below pushes out the oldest
            self._overflow(1)
        queue.append((at, caller, rpc, plate_type, plate_number, verdict, serial))

    def record_many(self, caller: Caller, rpc: str, items: Iterable[BatchItem], at: float) -> None:
        """Accept one event per (plate_type, plate_number, verdict, serial), e.g. a VerifyBatch's items."""
        pending = [(at, caller, rpc, t, p, v, s) for t, p, v, s in items]
        queue = self._queue
        overflow = len(queue) + len(pending) - self._max_backlog
        if overflow > 0:
            self._overflow(overflow)
        queue.extend(pending)

    def backlog(self) -> int:
        """Events accepted and not yet written (also the vimark_audit_backlog gauge)."""
        return len(self._queue) + len(self._in_hand)

    def _overflow(self, count: int) -> None:
        self._metrics.audit_dropped.inc(count)
        if not self._dropping:
            self._dropping = True
            log.error(
                "audit backlog full (%d events waiting, database unreachable?): dropping the oldest events",
                self._max_backlog,
            )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("AuditLog already started")
        self._thread = threading.Thread(target=self._run, name="vimark-audit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> int:
        """Write everything still buffered, giving up after `timeout` seconds (the database may be
        down). Returns how many events could not be written; they are counted as dropped."""
        if self._closed:
            return 0
        self._closed = True
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        if self._thread is None:  # never started: write from this thread
            self._run()
        else:
            self._thread.join(timeout + 0.5)  # a database call in flight may hold it past the deadline
        lost = self.backlog()
        if lost:
            self._metrics.audit_dropped.inc(lost)
            log.error("audit log closed with %d events not written (database unreachable)", lost)
        return lost

    def __enter__(self) -> AuditLog:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            closing = self._closing.is_set()
            if not self._in_hand:
                if len(self._queue) < self._batch_size and not closing:
                    self._closing.wait(self._flush_interval)  # let a batch gather (or close wake us)
                    closing = self._closing.is_set()
                self._take()
                if not self._in_hand:
                    if closing:
                        return
                    continue
            if self._write():
                continue
            pause = min(self._flush_interval * 2 ** min(self._failures - 1, 30), _MAX_RETRY_INTERVAL)
            if closing:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return
                time.sleep(min(pause, remaining))
            else:
                self._closing.wait(pause)

    def _take(self) -> None:
        queue = self._queue
        # Only this thread takes from the queue, and appends never shorten it: these pops succeed.
        items = [queue.popleft() for _ in range(min(len(queue), self._batch_size))]
        events: list[AuditEvent] = []
        for at, caller, rpc, plate_type, plate_number, verdict, serial in items:
            try:
                when = dt.datetime.fromtimestamp(at, dt.UTC)
                events.append(
                    AuditEvent(
                        when,
                        caller.caller_id,
                        caller.role.value,
                        rpc,
                        plate_type,
                        plate_number,
                        verdict,
                        int(serial),
                        caller.fingerprint,
                    )
                )
            except (TypeError, ValueError, OverflowError, OSError, AttributeError):
                self._metrics.audit_dropped.inc()
                log.exception("audit event not recordable, dropped: %r", (at, caller, rpc, plate_number))
        self._in_hand = events

    def _write(self) -> bool:
        batch = self._in_hand
        try:
            self._store.append_audit(batch)
        except Exception as exc:  # the database is down (Unavailable) or refuses: keep the batch, retry
            self._failures += 1
            if self._failures == 1:
                log.warning("audit log cannot be written, keeping events in memory and retrying: %s", exc)
            return False
        self._in_hand = []
        self._metrics.audit_written.inc(len(batch))
        if self._failures:
            log.warning("audit log writes resumed after %d failed attempts", self._failures)
            self._failures = 0
            self._dropping = False
        return True


__all__ = ["AuditLog", "AuditSink", "BatchItem"]
