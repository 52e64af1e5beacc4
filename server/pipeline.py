"""Two stages on threads of their own in front of the caller's loop, so that the database's work
(mostly outside the GIL) overlaps the Python around it: `staged` is how ImportVehicles parses
one batch, writes the one before and brings the index up to the one before that, at once."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Generic, TypeVar

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
T = TypeVar("T")

_WAKE_SECONDS = 0.5  # how often a blocked hand-over looks whether the pipeline was stopped


class _Failed:
    """An exception handed from one stage to the next (so a stage's value is never mistaken for one)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()  # after the last item


class _Handoff(Generic[T]):
    """One item at a time from one stage to the next: an item, the exception that ended the
    stage before (as _Failed), or _END. `stop` makes every later hand-over give up."""

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._stopped = threading.Event()

    def put(self, item: object) -> bool:
        """False once stopped: the stage ends without handing this on."""
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=_WAKE_SECONDS)
                return True
        return False

    def get(self) -> T:
        """The next item; raises the exception that ended the stage before, StopIteration at the
        end or once stopped."""
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Empty):
                item = self._queue.get(timeout=_WAKE_SECONDS)
                if item is _END:
                    raise StopIteration
                if isinstance(item, _Failed):
                    raise item.error
                return item  # type: ignore[return-value]
        raise StopIteration

    def stop(self) -> None:
        self._stopped.set()


def staged(
    source: Iterator[A], first: Callable[[A], B], second: Callable[[B], C], *, pause: float, name: str
) -> Generator[C, None, None]:
    """`second(first(a))` for each `a` of `source`, in order: `first` on one thread, `second` on
    another (which sleeps `pause` seconds after each item), each at most one item ahead of the
    next stage. The first exception, from `source` or a stage, is raised here after the results
    before it; nothing after it is passed to `second`. Closing the iterator early stops both
    threads at their next hand-over; up to two items `second` has finished (one waiting here,
    one being handed over) are then never yielded: in ImportVehicles, batches written but not
    acknowledged, which an import sent again only updates."""
    firsts, seconds = _Handoff[B](), _Handoff[C]()

    def run_first() -> None:
        try:
            for a in source:
                if not firsts.put(first(a)):
                    return
        except BaseException as exc:  # handed on, raised by the caller's loop
            firsts.put(_Failed(exc))
        else:
            firsts.put(_END)

    def run_second() -> None:
        try:
            while True:
                try:
                    b = firsts.get()
                except StopIteration:
                    break
                if not seconds.put(second(b)):
                    return
                time.sleep(pause)
        except BaseException as exc:
            seconds.put(_Failed(exc))
        else:
            seconds.put(_END)

    threading.Thread(target=run_first, name=f"{name}-first", daemon=True).start()
    threading.Thread(target=run_second, name=f"{name}-second", daemon=True).start()
    try:
        while True:
            try:
                c = seconds.get()
            except StopIteration:
                return
            yield c
    finally:
        firsts.stop()
        seconds.stop()
