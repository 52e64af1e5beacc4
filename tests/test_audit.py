"""The audit log: events are buffered off the hot path, written in batches, survive a restart,
are queryable by plate, caller and time, are kept (not lost) while the database is down, and the
`vimark audit` command prints them."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from conftest import MovableClock, start_server
from vimark.client.errors import InvalidArgument, Unavailable
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.audit import AuditLog, AuditSink
from vimark.server.auth import Caller
from vimark.server.metrics import Metrics
from vimark.server.policy import Role, audited_roles
from vimark.server.records import AuditEvent
from vimark.server.store import Store

VIMARK = [sys.executable, "-m", "vimark.client.cli.main"]  # the terminal-only command line
POLICE = Caller(Role.POLICE, "police-terminal-0042")
PARTNER = Caller(Role.PARTNER, "insurer-picc")
T0 = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC).timestamp()  # 10:00 in China, the day of the tests
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nothing_listens_here"


class Batches:
    """Forwards to a store and remembers the size of every batch it was given."""

    def __init__(self, store: AuditSink) -> None:
        self.store = store
        self.sizes: list[int] = []

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        self.sizes.append(len(events))
        self.store.append_audit(events)


class Outage:
    """Fault injection: the first `failures` writes fail as a down database does, then it is back."""

    def __init__(self, store: AuditSink, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.attempts = 0

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise Unavailable("database unavailable: connection refused (injected)")
        self.store.append_audit(events)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def verify(log: AuditLog, i: int, caller: Caller = POLICE, *, at: float | None = None) -> None:
    """Record the i-th synthetic Verify: plate 闽C1xxxx, serial 1000+i, one second apart."""
    log.record(caller, "Verify", "02", f"闽C1{i:04d}", "VERDICT_VALID", 1000 + i, T0 + i if at is None else at)


def test_events_are_written_in_batches_and_readable_after_close(store: Store) -> None:
    metrics = Metrics()
    sink = Batches(store)
    log = AuditLog(sink, metrics, flush_interval=0.05, batch_size=500)
    for i in range(1200):  # accepted before the writer starts: it finds them waiting
        verify(log, i)
    log.record(PARTNER, "VerifyBatch", "52", "", "VERDICT_FORGED", 0, T0 + 5000.25)  # not authentic: no plate
    log.record_many(
        PARTNER,
        "VerifyBatch",
        [("02", "闽D00001", "VERDICT_VALID", 7), ("02", "闽D00002", "VERDICT_EXPIRED", 8)],
        T0 + 5001,
    )
    assert sample(metrics, "vimark_audit_backlog") == 1203
    log.start()
    wait_for(lambda: sample(metrics, "vimark_audit_backlog") == 0)
    verify(log, 9999)  # recorded while the writer runs
    assert log.close() == 0

    assert sink.sizes == [500, 500, 203, 1]
    assert sample(metrics, "vimark_audit_written_total") == 1204
    assert sample(metrics, "vimark_audit_backlog") == 0
    assert sample(metrics, "vimark_audit_dropped_total") == 0
    events = store.audit_events(limit=5000)
    assert len(events) == 1204
    assert events[0] == AuditEvent(
        at=dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC),
        caller_id="police-terminal-0042",
        role="police",
        rpc="Verify",
        plate_type="02",
        plate_number="闽C10000",
        verdict="VERDICT_VALID",
        serial=1000,
    )
    assert [e.serial for e in events[:1200]] == list(range(1000, 2200))
    forged, first, second, last = events[1200:]
    assert last.serial == 1000 + 9999
    assert (forged.role, forged.rpc, forged.plate_number, forged.verdict, forged.serial) == (
        "partner",
        "VerifyBatch",
        "",
        "VERDICT_FORGED",
        0,
    )
    assert forged.at.timestamp() == pytest.approx(T0 + 5000.25, abs=1e-3)  # sub-second precision kept
    assert [(e.plate_number, e.verdict, e.serial) for e in (first, second)] == [
        ("闽D00001", "VERDICT_VALID", 7),
        ("闽D00002", "VERDICT_EXPIRED", 8),
    ]


def test_events_survive_a_restart(db_url: str) -> None:
    store = Store(db_url)
    log = AuditLog(store, Metrics(), flush_interval=0.01)
    log.start()
    for i in range(10):
        verify(log, i)
    log.record(POLICE, "LookupVehicleStatus", "02", "闽C99999", "NOT_FOUND", 0, T0 + 100)
    assert log.close() == 0
    store.close()

    reopened = Store(db_url)  # a restarted server: migrating again must keep the rows
    try:
        events = reopened.audit_events()
        assert [e.serial for e in events] == [*range(1000, 1010), 0]
        assert (events[-1].rpc, events[-1].verdict) == ("LookupVehicleStatus", "NOT_FOUND")
    finally:
        reopened.close()


def test_filters_by_plate_caller_and_time(store: Store) -> None:
    log = AuditLog(store, Metrics())
    # Recorded out of time order (threads race): the query answers in time order.
    for i in (5, 3, 1, 4, 2, 0):
        verify(log, i % 3, POLICE if i % 2 else PARTNER, at=T0 + 60 * i)
    assert log.close() == 0  # never started: close writes from the calling thread

    def minutes(events: list[AuditEvent]) -> list[int]:
        return [round((e.at.timestamp() - T0) / 60) for e in events]

    assert minutes(store.audit_events()) == [0, 1, 2, 3, 4, 5]
    assert minutes(store.audit_events(plate_number="闽C10001")) == [1, 4]
    assert minutes(store.audit_events(caller_id=POLICE.caller_id)) == [1, 3, 5]
    assert minutes(store.audit_events(caller_id=PARTNER.caller_id)) == [0, 2, 4]
    since = dt.datetime.fromtimestamp(T0 + 180, dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert minutes(store.audit_events(since=since)) == [3, 4, 5]  # inclusive, whatever the zone
    assert minutes(store.audit_events(since=since, caller_id=PARTNER.caller_id)) == [4]
    assert minutes(store.audit_events(plate_number="闽C10000", caller_id=POLICE.caller_id)) == [3]
    assert minutes(store.audit_events(limit=2)) == [0, 1]
    assert store.audit_events(plate_number="闽C77777") == []


def test_a_down_database_keeps_events_until_it_returns(store: Store) -> None:
    metrics = Metrics()
    outage = Outage(store, failures=10**9)
    log = AuditLog(outage, metrics, flush_interval=0.01, batch_size=10)
    log.start()
    for i in range(25):
        verify(log, i)
    wait_for(lambda: outage.attempts >= 3)
    assert store.audit_events() == []
    assert sample(metrics, "vimark_audit_backlog") == 25
    for i in range(25, 40):
        verify(log, i)
    assert sample(metrics, "vimark_audit_backlog") == 40  # the backlog rises while the database is down

    outage.failures = outage.attempts + 2  # two more failures, then the database is back
    wait_for(lambda: sample(metrics, "vimark_audit_backlog") == 0)
    assert log.close() == 0
    assert [e.serial for e in store.audit_events()] == list(range(1000, 1040))  # all of them, in order
    assert sample(metrics, "vimark_audit_written_total") == 40
    assert sample(metrics, "vimark_audit_dropped_total") == 0


def test_a_real_unreachable_database_then_the_real_one(store: Store) -> None:
    """No injected error: the writes go to a PostgreSQL address where nothing listens, then to the real store."""
    dead = Store(UNREACHABLE, migrate=False, connect_timeout=1)
    with pytest.raises(Unavailable):
        dead.append_audit([AuditEvent(dt.datetime.now(dt.UTC), "x", "police", "Verify", "02", "闽C1", "V", 1)])

    class Switch:
        target: AuditSink = dead

        def append_audit(self, events: Sequence[AuditEvent]) -> None:
            self.target.append_audit(events)

    switch = Switch()
    metrics = Metrics()
    log = AuditLog(switch, metrics, flush_interval=0.01, batch_size=4)
    log.start()
    for i in range(9):
        verify(log, i)
    time.sleep(0.2)
    assert sample(metrics, "vimark_audit_backlog") == 9
    switch.target = store
    assert log.close(timeout=10) == 0
    dead.close()
    assert [e.serial for e in store.audit_events()] == list(range(1000, 1009))


def test_past_max_backlog_the_oldest_are_dropped_counted_and_logged_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    log = AuditLog(Outage(store, failures=2), metrics, flush_interval=0.01, batch_size=5, max_backlog=10)
    with caplog.at_level(logging.ERROR, logger="vimark.server"):
        for i in range(25):
            verify(log, i)
        log.record_many(
            POLICE, "VerifyBatch", [("02", f"闽C2{i:04d}", "VERDICT_VALID", 2000 + i) for i in range(5)], T0 + 100
        )
    assert sample(metrics, "vimark_audit_dropped_total") == 20
    assert sample(metrics, "vimark_audit_backlog") == 10
    assert sum("backlog full" in r.getMessage() for r in caplog.records) == 1
    log.start()
    assert log.close() == 0
    assert [e.serial for e in store.audit_events()] == [1020, 1021, 1022, 1023, 1024, 2000, 2001, 2002, 2003, 2004]


def test_close_gives_up_on_a_database_that_stays_down() -> None:
    dead = Store(UNREACHABLE, migrate=False, connect_timeout=1)
    metrics = Metrics()
    log = AuditLog(dead, metrics, flush_interval=0.01)
    log.start()
    for i in range(3):
        verify(log, i)
    started = time.monotonic()
    assert log.close(timeout=0.5) == 3
    assert time.monotonic() - started < 3
    assert sample(metrics, "vimark_audit_dropped_total") == 3
    dead.close()


def test_audited_roles_are_police_partners_and_issuers() -> None:
    assert audited_roles() == {Role.POLICE, Role.PARTNER, Role.STATION, Role.REGISTRATION, Role.OWNER_SERVICE}


def run_cli(server: VimarkServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TZ": "Asia/Shanghai"}  # a --since without a zone is local time
    command = [*VIMARK, "audit", "--server", f"127.0.0.1:{server.port}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_cli_prints_one_json_object_per_event(db_url: str, keys_dir: Path, clock: MovableClock) -> None:
    """`vimark audit` reads the log through the server's AuditService, never the database."""
    store = Store(db_url)
    log = AuditLog(store, Metrics())
    for i in range(4):
        verify(log, i % 2, POLICE if i < 3 else PARTNER, at=T0 + i + 0.5)
    log.record(POLICE, "LookupVehicleStatus", "02", "闽C10001", "FOUND", 0, T0 + 10)
    assert log.close() == 0
    store.close()
    server = start_server(db_url, keys_dir, clock)
    try:
        result = run_cli(server, "--plate-number", "闽C10001", "--json")
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        chained = ("event_id", "certificate_fingerprint", "chain_hash")
        assert all(len(line["chain_hash"]) == 64 for line in lines)
        assert [{k: v for k, v in line.items() if k not in chained} for line in lines] == [
            {
                "at": "2026-11-25T02:00:01.500000+00:00",
                "caller_id": "police-terminal-0042",
                "role": "police",
                "rpc": "Verify",
                "plate_type": "02",
                "plate_number": "闽C10001",
                "verdict": "VERDICT_VALID",
                "serial": 1001,
            },
            {
                "at": "2026-11-25T02:00:03.500000+00:00",
                "caller_id": "insurer-picc",
                "role": "partner",
                "rpc": "Verify",
                "plate_type": "02",
                "plate_number": "闽C10001",
                "verdict": "VERDICT_VALID",
                "serial": 1001,
            },
            {
                "at": "2026-11-25T02:00:10+00:00",
                "caller_id": "police-terminal-0042",
                "role": "police",
                "rpc": "LookupVehicleStatus",
                "plate_type": "02",
                "plate_number": "闽C10001",
                "verdict": "FOUND",
                "serial": 0,
            },
        ]
        ids = [line["event_id"] for line in lines]
        assert ids == sorted(ids) and len(set(ids)) == 3

        since = "2026-11-25T10:00:02+08:00"
        result = run_cli(server, "--caller", "police-terminal-0042", "--since", since)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 2
        assert "闽C10000 (02)" in lines[0] and "VERDICT_VALID" in lines[0] and "serial 1000" in lines[0]
        assert "LookupVehicleStatus" in lines[1] and "FOUND" in lines[1]

        result = run_cli(server, "--since", "2026-11-25", "--limit", "2", "--json")
        assert result.returncode == 0, result.stderr
        assert [json.loads(line)["serial"] for line in result.stdout.splitlines()] == [1000, 1001]

        result = run_cli(server, "--since", "2026-11-25", "--until", "2026-11-25T10:00:02+08:00", "--json")
        assert [json.loads(line)["serial"] for line in result.stdout.splitlines()] == [1000, 1001]
    finally:
        server.stop(grace=1)


def test_paging_neither_repeats_nor_skips_events_sharing_a_time(
    db_url: str, keys_dir: Path, clock: MovableClock
) -> None:
    """Events written in one batch share their second; a page boundary inside them loses none."""
    store = Store(db_url)
    log = AuditLog(store, Metrics())
    for i in range(23):
        verify(log, i, at=T0 + (i // 10))  # three timestamps, ten events each (three in the last)
    assert log.close() == 0
    store.close()
    server = start_server(db_url, keys_dir, clock)
    try:
        with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
            serials: list[int] = []
            token = ""
            pages = 0
            while True:
                page = client.list_audit_events(page_size=4, page_token=token)
                serials += [e.serial for e in page.events]
                pages += 1
                token = page.next_page_token
                if not token:
                    break
            assert serials == [1000 + i for i in range(23)] and pages == 6
            with pytest.raises(InvalidArgument) as other:
                client.list_audit_events(
                    page_size=4,
                    page_token=client.list_audit_events(page_size=4).next_page_token,
                    caller_id="someone-else",
                )
            assert other.value.field == "page_token"
            with pytest.raises(InvalidArgument) as garbled:
                client.list_audit_events(page_token="not-a-token")
            assert garbled.value.field == "page_token"
    finally:
        server.stop(grace=1)


def test_cli_refuses_a_bad_since(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> None:
    server = start_server(sqlite_url, keys_dir, clock)
    try:
        result = run_cli(server, "--since", "last tuesday")
        assert result.returncode == 2
        assert "'last tuesday' is not a date" in result.stderr
    finally:
        server.stop(grace=1)
