"""A progress line for long jobs (a registry import, a backfill): done, rate and time left.

On a terminal one line redrawn in place (at most ten times a second); elsewhere (a log, CI) a
plain line every `every` seconds, so a job's output stays readable in a file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

_REDRAW = 0.1  # seconds between redraws on a terminal


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """`advance(n)` as work is done; `close()` (or leaving the `with`) prints the final line."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = _REDRAW if self.interactive else every
        self._now = clock
        self.done = 0
        self._started = self._now()
        self._shown = self._started
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._now()
        if now - self._shown >= self.every:
            self._shown = now
            self._show(now)

    def line(self, now: float | None = None) -> str:
        """The figures as one line: done (of total, percent), rate per second, time left."""
        elapsed = max((now if now is not None else self._now()) - self._started, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            share = min(self.done / self.total, 1.0)
            width = 24
            bar = "#" * int(share * width) + "." * (width - int(share * width)) if self.interactive else ""
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = _duration(left) if left != float("inf") else "?"
            head = f"{self.label} {bar + ' ' if bar else ''}{self.done:,}/{self.total:,}{unit} ({share:.0%})"
            return f"{head}  {rate:,.0f}/s  {eta} left"
        return f"{self.label} {self.done:,}{unit}  {rate:,.0f}/s  {_duration(elapsed)} elapsed"

    def _show(self, now: float) -> None:
        text = self.line(now)
        if self.interactive:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Print the final line once: everything done, the average rate, the time taken."""
        if self._closed:
            return
        self._closed = True
        now = self._now()
        elapsed = now - self._started
        unit = f" {self.unit}" if self.unit else ""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label} {self.done:,}{unit} in {_duration(elapsed)} ({rate:,.0f}/s)"
        self.stream.write(("\r\x1b[K" if self.interactive else "") + text + "\n")
        self.stream.flush()
