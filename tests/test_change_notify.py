"""Replicas hear changes at once: on PostgreSQL every change-log write NOTIFYs `vimark_changes` at
its commit and each server LISTENs (store.engine.ChangeListener), so a replica's index follows a
write on another server in milliseconds, not at its next poll. Polling stays the fallback: without
notifications, and while the listener's connection is away."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from tcp_proxy import TcpProxy

from conftest import MovableClock, start_server, vehicle
from vimark.client.domain import VehicleCategory
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.records import VehicleRecord
from vimark.server.store import Store
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

POSTGRES_ONLY = "LISTEN/NOTIFY is PostgreSQL's; on SQLite polling is the mechanism (tests/test_index_sync.py)"
LONG_POLL = 5.0  # far longer than any wait below: only a notification can explain a quick catch-up
AT_ONCE = 0.5


def _postgres(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip(POSTGRES_ONLY)


def _within(seconds: float, seen: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while not seen():
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"{what}: not seen within {seconds} s"
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
def pair(
    db_url: str, keys_dir: Path, clock: MovableClock, request: pytest.FixtureRequest
) -> Iterator[tuple[VimarkServer, VimarkServer]]:
    _postgres(db_url)
    poll = getattr(request, "param", LONG_POLL)
    a = start_server(db_url, keys_dir, clock, poll_interval=poll)
    try:
        b = start_server(db_url, keys_dir, clock, poll_interval=poll)
    except BaseException:
        a.stop(grace=1)
        raise
    try:
        yield a, b
    finally:
        for s in (a, b):
            started = time.monotonic()
            s.stop(grace=1)
            assert time.monotonic() - started < 3.0, "stop() waited out the long poll interval"


def test_a_replica_hears_upserts_issues_and_status_changes_at_once(pair: tuple[VimarkServer, VimarkServer]) -> None:
    a, b = pair
    assert a.config.poll_interval == b.config.poll_interval == LONG_POLL
    time.sleep(0.3)  # both tail loops are in their first long wait
    with VimarkClient(f"127.0.0.1:{a.port}") as ca, VimarkClient(f"127.0.0.1:{b.port}") as cb:
        ca.upsert_vehicles([vehicle(registered_on="2026-11-02")])
        _within(AT_ONCE, lambda: b.index.by_plate("02", "闽C12345") is not None, "an upsert on A, in B's index")

        mark = ca.issue(request_id="r1", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION)
        _within(AT_ONCE, lambda: cb.verify(mark.qr_text).verdict == pb.VERDICT_VALID, "an Issue on A, verified on B")

        before = b.index.by_plate("02", "闽C12345")
        assert before is not None
        ca.set_status(plate_number="闽C12345", plate_type="02", status_codes="G")
        _within(
            AT_ONCE,
            lambda: b.index.by_plate("02", "闽C12345").status_bits != before.status_bits,  # type: ignore[union-attr]
            "a status change on A, in B's index",
        )
    assert a.index.checksum() == b.index.checksum()


@pytest.mark.parametrize("pair", [0.2], indirect=True)
def test_polling_still_catches_up_without_notifications(pair: tuple[VimarkServer, VimarkServer]) -> None:
    a, b = pair
    a.store.notify_changes = False  # A's writes now commit silently: B learns of them by polling only
    with VimarkClient(f"127.0.0.1:{a.port}") as ca:
        ca.upsert_vehicles([vehicle(registered_on="2026-11-02")])
        mark = ca.issue(request_id="r1", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION)
    _within(
        2.0,
        lambda: getattr(b.index.by_plate("02", "闽C12345"), "current_serial", 0) == mark.serial,
        "a silent Issue, on B",
    )
    assert a.index.checksum() == b.index.checksum()


def test_the_listener_survives_the_database_going_away(db_url: str) -> None:
    _postgres(db_url)
    url = make_url(db_url)
    writer = Store(db_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        replica = Store(
            make_url(db_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), migrate=False
        )
        try:
            assert replica.wait_for_change(1.0)  # (re)connected: "maybe changed", so the caller catches up
            assert not replica.wait_for_change(0.1)  # nothing written, nothing heard
            _register_one(writer)
            assert replica.wait_for_change(2.0), "a committed change was not heard"
            assert not replica.wait_for_change(0.1)  # one wake-up covered it

            proxy.cut("refuse")  # the database goes away: no exception, the timeout is slept out
            for _ in range(3):
                started = time.monotonic()
                assert not replica.wait_for_change(0.2)
                assert 0.15 < time.monotonic() - started < 2.5

            proxy.restore()  # reconnects on a later call, after its backoff
            _within(10.0, lambda: replica.wait_for_change(0.2), "the listener reconnected")
            _register_one(writer)
            assert replica.wait_for_change(2.0), "a change after the reconnect was not heard"
        finally:
            replica.close()
            writer.close()
    started = time.monotonic()
    assert not replica.wait_for_change(0.1)  # closed: sleeps, never reconnects nor raises
    assert time.monotonic() - started < 0.5


def test_sqlite_waits_out_the_timeout(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    try:
        _register_one(store)
        started = time.monotonic()
        assert not store.wait_for_change(0.1)  # polling is the mechanism on SQLite
        assert time.monotonic() - started >= 0.09
        assert not store.notify_changes
    finally:
        store.close()


def _register_one(store: Store) -> None:
    store.upsert_vehicles(
        [
            VehicleRecord(
                vehicle_id=0,
                plate_type="02",
                plate_number="闽C54321",
                vin="LSVAB2BJ5KN000009",
                category=VehicleCategory.SMALL_PASSENGER,
                registered_on=dt.date(2024, 5, 1),
                seats=5,
                exemption_lost=False,
                status_bits=0,
                valid_until=24315,
                current_serial=0,
            )
        ]
    )
