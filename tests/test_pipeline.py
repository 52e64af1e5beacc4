"""pipeline.staged, the three-stage loop of ImportVehicles: results in order; the first failure,
of the source or a stage, raised after the results before it, with nothing after it reaching the
second stage; and closing the loop stops both threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from vimark.server.pipeline import staged


def _source(n: int, fail_at: int | None = None) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"source failed at {i}")
        yield i


def test_results_come_in_order_through_both_stages() -> None:
    assert list(staged(_source(50), lambda a: a * 2, lambda b: b + 1, pause=0, name="t")) == [
        2 * i + 1 for i in range(50)
    ]


@pytest.mark.parametrize("where", ["source", "first", "second"])
def test_the_first_failure_ends_the_loop_after_the_results_before_it(where: str) -> None:
    seen: list[int] = []

    def first(a: int) -> int:
        if where == "first" and a == 5:
            raise ValueError("first failed at 5")
        return a

    def second(b: int) -> int:
        if where == "second" and b == 5:
            raise ValueError("second failed at 5")
        seen.append(b)
        return b

    results = []
    with pytest.raises(ValueError, match="failed at 5"):
        for c in staged(_source(20, 5 if where == "source" else None), first, second, pause=0, name="t"):
            results.append(c)
    assert results == [0, 1, 2, 3, 4]
    time.sleep(0.1)
    assert seen == [0, 1, 2, 3, 4]  # nothing after the failure reached the second stage


def test_closing_the_loop_stops_both_threads() -> None:
    second_calls: list[int] = []
    loop = staged(_source(10_000), lambda a: a, lambda b: second_calls.append(b) or b, pause=0, name="stopping")
    assert next(loop) == 0
    loop.close()
    deadline = time.monotonic() + 3
    while any(t.name.startswith("stopping") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a stage thread outlived the loop"
        time.sleep(0.05)
    assert len(second_calls) < 10  # at most an item or two in flight, not the whole source


def test_none_and_exception_objects_are_values_like_any_other() -> None:
    """A stage's result is never taken for the end of the stream or for a failure."""
    values: list[object] = [None, ValueError("a value, not a failure"), 3]
    assert list(staged(iter(values), lambda a: a, lambda b: b, pause=0, name="values")) == values
