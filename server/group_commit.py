"""Group commit: concurrent callers' commands share one transaction (one fsync, one commit).

A caller that finds no batch running becomes the leader: it takes every pending command (up to a
cap), runs them through `run` (which opens one transaction, runs each command in isolation and
commits once), hands the result or exception of each command to its caller, and passes the lead to
the oldest waiting caller, if any. Nobody is answered before `run` returned, that is after the
commit. No background thread: there is nothing to start or stop.

Where writers take turns (`turn`: the SQLite writer lock, shared with other processes), the leader
waits for its turn *before* it takes the pending commands: whoever arrives while it waits joins
its batch, instead of each wait ending in a batch of one or two.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Generic, TypeVar

log = logging.getLogger("vimark.server")

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.wake = threading.Event()  # set when answered, or when handed the lead
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommitter(Generic[T, R]):
    """Runs `run(items)` on batches of concurrently submitted items.

    `run` returns one outcome per item, in order: a result, or the exception that item's caller
    gets. If `run` itself raises, every caller in that batch gets the exception."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R | BaseException]],
        max_batch: int = 64,
        turn: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self._run = run
        self._turn = turn
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Slot[T, R]] = []
        self._busy = False  # a leader is running (or about to run) a batch

    def _take(self) -> list[_Slot[T, R]]:
        with self._lock:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
        return batch

    def _outcomes(self, batch: list[_Slot[T, R]]) -> Sequence[R | BaseException]:
        try:
            outcomes = self._run([s.item for s in batch])
            if len(outcomes) != len(batch):
                raise AssertionError(f"group commit: {len(outcomes)} outcomes for {len(batch)} commands")
        except BaseException as exc:  # the whole batch failed (database down, ...): all callers learn it
            return [exc] * len(batch)
        return outcomes

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.wake.wait()
            lead = not slot.done  # woken without an answer: we were handed the lead
        if lead:
            self._lead()  # our slot is the oldest pending one, so it is in this batch
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self) -> None:
        batch: list[_Slot[T, R]] = []
        outcomes: Sequence[R | BaseException] | None = None
        try:
            with self._turn():
                batch = self._take()
                outcomes = self._outcomes(batch)
        except BaseException as exc:
            if outcomes is None:  # no turn (its lock could not be had): the batch learns why
                batch = batch or self._take()
                outcomes = [exc] * len(batch)
            else:  # letting go of the turn failed after the batch ran: its outcomes stand
                log.exception("group commit: leaving the writer's turn failed after the batch ran")
        finally:
            with self._lock:  # pass the lead on before answering, so the next batch starts at once
                if self._pending:
                    self._pending[0].wake.set()
                else:
                    self._busy = False
        for s, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                s.error = outcome
            else:
                s.result = outcome
            s.done = True
            s.wake.set()


__all__ = ["GroupCommitter"]
