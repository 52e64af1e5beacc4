"""The signature engine: Ed25519 checks batched onto worker threads (architecture principle 4).

Callers on many gRPC threads hand in (public key, signature, message) items; a few worker threads
(by default one per core) take whatever is pending, up to `max_batch` items, waiting at most
`window` seconds for more when fewer are pending (0: check right away). Within a batch identical
items are checked once. The check itself is native code that releases the GIL (libsodium), so the
workers keep every core busy while the callers' threads go on decoding in Python.

    engine = SignatureEngine(observe=metrics.signature_batch_size.observe)
    engine.start()
    ...  Verifier(index, keys, clock, config, signatures=engine)
    engine.stop()        # finishes what is pending; afterwards every check runs on the caller's thread

A single check (`check`) runs on the caller's own thread unless `coalesce_unary` is set: measured
on this machine (load/verify_engine.py), handing one item to a worker and back costs more than it
saves, because the caller's thread already releases the GIL for the check and gRPC gives each
call its own thread. `check_many` and `submit_many` (VerifyBatch) are split across the workers.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from vimark.client.trust import SignatureCheck, verify_signature

Signed = tuple[bytes, bytes, bytes]  # (public key, signature, message)


class Ticket(Protocol):
    def result(self) -> list[bool]:
        """The answers, in the order submitted; blocks until they are all known."""
        ...


class SignatureChecker(Protocol):
    """What the verifier needs: one check, or many at once (possibly in the background)."""

    def check(self, public_key: bytes, signature: bytes, message: bytes) -> bool: ...
    def check_many(self, items: Sequence[Signed]) -> list[bool]: ...
    def submit_many(self, items: Sequence[Signed]) -> Ticket: ...


class _Done:
    """A ticket whose answers are already known."""

    __slots__ = ("_answers",)

    def __init__(self, answers: list[bool]) -> None:
        self._answers = answers

    def result(self) -> list[bool]:
        return self._answers


def _check_all(check: SignatureCheck, items: Sequence[Signed]) -> list[bool]:
    """Check each distinct item once, in order."""
    answers: dict[Signed, bool] = {}
    out = []
    for item in items:
        answer = answers.get(item)
        if answer is None:
            answer = answers[item] = check(*item)
        out.append(answer)
    return out


class InlineSignatures:
    """Every check on the caller's thread: offline terminals, tests, and a server without an engine."""

    def __init__(self, check: SignatureCheck = verify_signature) -> None:
        self._check = check

    def check(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        return self._check(public_key, signature, message)

    def check_many(self, items: Sequence[Signed]) -> list[bool]:
        return _check_all(self._check, items)

    def submit_many(self, items: Sequence[Signed]) -> Ticket:
        return _Done(_check_all(self._check, items))


class _Job:
    """One caller's items; workers fill `answers` slice by slice, the last one sets `done`."""

    __slots__ = ("answers", "done", "error", "items", "remaining")

    def __init__(self, items: Sequence[Signed]) -> None:
        self.items = items
        self.answers: list[bool] = [False] * len(items)
        self.remaining = len(items)
        self.error: BaseException | None = None
        self.done = threading.Event()

    def result(self) -> list[bool]:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.answers


class SignatureEngine:
    """Worker threads that check signatures in batches. Lifecycle: start(), then stop() (idempotent).
    Before start() and after stop() every check runs on the caller's thread, so nothing waits forever."""

    def __init__(
        self,
        check: SignatureCheck = verify_signature,
        *,
        workers: int | None = None,
        window: float = 0.0,
        max_batch: int = 64,
        coalesce_unary: bool = False,
        observe: Callable[[int], None] | None = None,
        check_many: Callable[[Sequence[Signed]], list[bool]] | None = None,
    ) -> None:
        """`window`: seconds a worker waits for more items when fewer than `max_batch` are pending
        (0, the default: none; VerifyBatch hands in whole chunks, so waiting only delays them; a
        window of 0.0002-0.0005 is for coalesce_unary). `coalesce_unary`: send single checks through
        the workers too (measured no faster here, see the module note). `observe`: told each batch's
        size (a Prometheus histogram's observe). `check_many`: checks a worker's whole batch in
        one call instead of `check` item by item (server/hotpath.check_signatures: the GIL released
        once per batch, not per signature)."""
        if window < 0 or max_batch < 1:
            raise ValueError("window must be >= 0 and max_batch >= 1")
        self._check = check
        self._check_many = check_many
        self.workers = workers or len(os.sched_getaffinity(0))
        self.window = window
        self.max_batch = max_batch
        self.coalesce_unary = coalesce_unary
        self._observe = observe
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: deque[tuple[_Job, int, int]] = deque()  # (job, start, end) slices, oldest first
        self._pending_items = 0
        self._threads: list[threading.Thread] = []
        self._running = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._running or self._threads:
                raise RuntimeError("the signature engine is already started")
            self._running = True
            self._threads = [
                threading.Thread(target=self._work, name=f"vimark-signatures-{i}", daemon=True)
                for i in range(self.workers)
            ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking work; the workers finish everything already pending, then exit."""
        with self._lock:
            self._running = False
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> SignatureEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    # -- checking ------------------------------------------------------------------------------
    def check(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        if not self.coalesce_unary:
            return self._check(public_key, signature, message)
        return self.submit_many(((public_key, signature, message),)).result()[0]

    def check_many(self, items: Sequence[Signed]) -> list[bool]:
        return self.submit_many(items).result()

    def submit_many(self, items: Sequence[Signed]) -> Ticket:
        """Queue the items and return at once; `.result()` waits for the answers. Large submissions
        are cut into slices of at most max_batch, so every worker takes a share."""
        if not items:
            return _Done([])
        job = _Job(items)
        with self._lock:
            if not self._running:
                return _Done(_check_all(self._check, items))
            size = self.max_batch
            for start in range(0, len(items), size):
                self._pending.append((job, start, min(start + size, len(items))))
            self._pending_items += len(items)
            if len(items) > size:
                self._wake.notify_all()
            else:
                self._wake.notify()
        return job

    # -- the workers ---------------------------------------------------------------------------
    def _take(self) -> list[tuple[_Job, int, int]] | None:
        """Up to max_batch pending items (waiting at most the window for more), or None to exit."""
        with self._lock:
            while not self._pending:
                if not self._running:
                    return None
                self._wake.wait()
            if self.window and self._running and self._pending_items < self.max_batch:
                self._wake.wait_for(lambda: self._pending_items >= self.max_batch or not self._running, self.window)
                if not self._pending:  # another worker took them meanwhile
                    return []
            taken: list[tuple[_Job, int, int]] = []
            room = self.max_batch
            while self._pending and room:
                job, start, end = self._pending.popleft()
                if end - start > room:  # take part of this slice, leave the rest first in line
                    self._pending.appendleft((job, start + room, end))
                    end = start + room
                taken.append((job, start, end))
                room -= end - start
            self._pending_items -= self.max_batch - room
            if self._pending:
                self._wake.notify()  # more is waiting: let an idle worker start on it now
            return taken

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            if taken:
                self._run(taken)

    def _run(self, taken: list[tuple[_Job, int, int]]) -> None:
        check = self._check
        answers: dict[Signed, bool] = {}  # identical items in this batch are checked once
        if self._check_many is not None:
            distinct = list(dict.fromkeys(item for job, start, end in taken for item in job.items[start:end]))
            try:
                answers = dict(zip(distinct, self._check_many(distinct), strict=True))
            except BaseException as exc:  # as below: the callers hear of it, the worker lives
                for job, _, _ in taken:
                    job.error = exc
                answers = dict.fromkeys(distinct, False)
        count = 0
        for job, start, end in taken:
            items, out = job.items, job.answers
            count += end - start
            try:
                for i in range(start, end):
                    item = items[i]
                    answer = answers.get(item)
                    if answer is None:
                        answer = answers[item] = check(*item)
                    out[i] = answer
            except BaseException as exc:  # a broken checker must not kill the worker or strand the caller
                job.error = exc
        with self._lock:
            finished = []
            for job, start, end in taken:
                job.remaining -= end - start
                if job.remaining == 0:
                    finished.append(job)
        for job in finished:
            job.done.set()
        if self._observe is not None:
            self._observe(count)
