"""Paging through the audit log by event id (`Store.list_audit_events`), on SQLite and PostgreSQL:
every event comes exactly once, in the order it was stored, even where many share one time; the
filters (plate, caller, since inclusive, until exclusive) hold on every page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from vimark.client.errors import InvalidArgument
from vimark.server.records import AuditEvent
from vimark.server.store import Store

T0 = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)  # 10:00 in China, the day of the tests
CALLERS = ("police-terminal-0042", "insurer-picc")
PLATES = ("闽C10000", "闽C10001", "闽C10002")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def written(store: Store) -> list[AuditEvent]:
    """25 events in two batches, at only three distinct times; the second batch is stamped
    earlier than most of the first (a buffered event is written after newer ones)."""
    times = (T0, T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=1.5))
    first = [event(i, times[1 if i < 8 else 2]) for i in range(15)]
    second = [event(i, times[0 if i < 20 else 1]) for i in range(15, 25)]
    store.append_audit(first)
    store.append_audit(second)
    return first + second


def event(i: int, at: dt.datetime) -> AuditEvent:
    role = "police" if i % 2 == 0 else "partner"
    return AuditEvent(at, CALLERS[i % 2], role, "Verify", "02", PLATES[i % 3], "VERDICT_VALID", 1000 + i)


def page_through(store: Store, limit: int = 4, **filters: Any) -> tuple[list[AuditEvent], list[int]]:
    """Every page until an empty one, each asked for with after_id = the last event_id seen."""
    events: list[AuditEvent] = []
    sizes: list[int] = []
    after_id = 0
    for _ in range(100):
        page = store.list_audit_events(after_id=after_id, limit=limit, **filters)
        sizes.append(len(page))
        if not page:
            return events, sizes
        events.extend(page)
        after_id = page[-1].event_id
    raise AssertionError("paging did not end")


def test_every_event_once_in_id_order_though_many_share_a_time(store: Store) -> None:
    stored = written(store)
    events, sizes = page_through(store, limit=4)
    assert sizes == [4, 4, 4, 4, 4, 4, 1, 0]
    ids = [e.event_id for e in events]
    assert all(i > 0 for i in ids)
    assert ids == sorted(set(ids))  # strictly increasing: none twice, in id order
    assert [e.serial for e in events] == [e.serial for e in stored]  # the order they were stored in
    assert events == stored  # the whole event round-trips (event_id is not part of its value)
    assert len({e.at for e in events}) == 3
    # The older reader orders by time: the later batch's earlier events come first there.
    assert [e.serial for e in store.audit_events()][:5] == [1015, 1016, 1017, 1018, 1019]
    assert store.list_audit_events(after_id=ids[-1], limit=4) == []
    assert store.list_audit_events(after_id=ids[9], limit=100) == stored[10:]


@pytest.mark.parametrize(
    "filters",
    [
        {"plate_number": PLATES[1]},
        {"caller_id": CALLERS[0]},
        {"since": T0 + dt.timedelta(seconds=1)},  # inclusive: the 1 s events are in
        {"until": T0 + dt.timedelta(seconds=1.5)},  # exclusive: the 1.5 s events are out
        {"since": T0 + dt.timedelta(seconds=1), "until": T0 + dt.timedelta(seconds=1.5)},
        {"caller_id": CALLERS[1], "plate_number": PLATES[0], "since": T0 + dt.timedelta(seconds=1)},
        {"plate_number": "闽C77777"},
    ],
    ids=["plate", "caller", "since", "until", "since-until", "all", "no-match"],
)
def test_filters_hold_on_every_page(store: Store, filters: dict[str, Any]) -> None:
    stored = written(store)
    since, until = filters.get("since"), filters.get("until")
    expected = [
        e
        for e in stored
        if filters.get("plate_number", e.plate_number) == e.plate_number
        and filters.get("caller_id", e.caller_id) == e.caller_id
        and (since is None or e.at >= since)
        and (until is None or e.at < until)
    ]
    events, sizes = page_through(store, limit=4, **filters)
    assert [e.serial for e in events] == [e.serial for e in expected]
    assert [e.event_id for e in events] == sorted({e.event_id for e in events})
    assert sizes[-1] == 0 and all(size == 4 for size in sizes[:-2])


def test_the_time_filters_do_not_depend_on_the_zone(store: Store) -> None:
    written(store)
    china = dt.timezone(dt.timedelta(hours=8))
    since = (T0 + dt.timedelta(seconds=1)).astimezone(china)
    in_utc = store.list_audit_events(since=T0 + dt.timedelta(seconds=1), limit=100)
    assert store.list_audit_events(since=since, limit=100) == in_utc
    assert len(in_utc) == 20


def test_wrong_arguments_are_refused(store: Store) -> None:
    naive = dt.datetime(2026, 11, 25, 10, 0)
    with pytest.raises(InvalidArgument, match="limit"):
        store.list_audit_events(limit=0)
    with pytest.raises(InvalidArgument, match="since"):
        store.list_audit_events(since=naive, limit=10)
    with pytest.raises(InvalidArgument, match="until"):
        store.list_audit_events(until=naive, limit=10)
    with pytest.raises(InvalidArgument, match="after_id"):
        store.list_audit_events(after_id=-1, limit=10)
