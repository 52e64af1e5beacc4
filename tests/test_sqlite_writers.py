"""Writers of one SQLite file take turns on an flock beside it (`serve --workers N` shares the file):
a write waits while another process holds the turn, and goes through once that process is gone,
even when it was SIGKILLed holding it; Issues that arrive while their group waits for the turn are
committed together; Issue groups leave the WAL checkpoint until after the turn, and a failed
checkpoint fails no Issue."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import MovableClock, vehicle
from vimark.client.domain import china_date
from vimark.client.errors import Unavailable
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.keys import KeyDirectory
from vimark.server.registry import parse_vehicle
from vimark.server.store import Store
from vimark.server.sync import ReloadableKeyRing
from vimark.v1 import certificate_pb2 as cpb

HOLD_THE_TURN = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.read()
"""


@contextmanager
def _turn_held_elsewhere(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the writer's turn of tmp_path/vimark.db until it is killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_TURN, str(tmp_path / "vimark.db-writer.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _plates(n: int) -> list[str]:
    return [f"闽C{i:05d}" for i in range(n)]


def _issuing_store(tmp_path: Path, keys_dir: Path, clock: MovableClock, vehicles: int) -> tuple[Store, Issuer]:
    """A store of `vehicles` newly registered vehicles, and an Issuer on it."""
    store = Store(f"sqlite:///{tmp_path / 'vimark.db'}")
    registered = china_date(clock()).isoformat()
    store.upsert_vehicles(
        [
            parse_vehicle(vehicle(p, vin=f"LSVAB2BJ5KN{i:06d}", registered_on=registered))
            for i, p in enumerate(_plates(vehicles))
        ]
    )
    return store, Issuer(store, ReloadableKeyRing(KeyDirectory(keys_dir, clock)).signer, clock)


def _grant(request_id: str, plate: str) -> IssueCommand:
    """A registration mark: a grant, so each Issue writes a mark."""
    return IssueCommand(request_id, "02", plate, "", cpb.ISSUE_REASON_REGISTRATION, None, "")


def _marks_in(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM marks").fetchone()[0])


def test_a_write_waits_for_another_process_holding_the_turn(tmp_path: Path) -> None:
    db = tmp_path / "vimark.db"
    store = Store(f"sqlite:///{db}")
    with _turn_held_elsewhere(tmp_path) as holder:
        outcome: list[object] = []
        writer = threading.Thread(
            target=lambda: outcome.append(store.upsert_vehicles([parse_vehicle(vehicle())])), daemon=True
        )
        writer.start()
        writer.join(0.5)
        assert writer.is_alive(), "the write went ahead while another process held the writer's turn"
        assert store.snapshot()[1] == []  # reads do not wait (WAL), and nothing was written yet
        holder.kill()  # SIGKILL: the kernel releases the flock with the process
        holder.wait()
        writer.join(10)
        assert not writer.is_alive(), "the write did not go through after the holder died"
        assert outcome == [(1, 0)]
        assert [v.plate_number for v in store.snapshot()[1]] == ["闽C12345"]
    store.close()


def test_issues_arriving_while_their_group_waits_for_the_turn_commit_together(
    tmp_path: Path, keys_dir: Path, clock: MovableClock
) -> None:
    store, issuer = _issuing_store(tmp_path, keys_dir, clock, 6)
    try:
        with _turn_held_elsewhere(tmp_path) as holder, futures.ThreadPoolExecutor(6) as pool:
            pending = [pool.submit(issuer.issue, _grant(f"r{i}", p)) for i, p in enumerate(_plates(6))]
            waiting = store._issuance._issues._pending
            deadline = time.monotonic() + 30
            while len(waiting) < 6 and time.monotonic() < deadline:  # the first waits for the turn, the rest behind it
                time.sleep(0.01)
            assert len(waiting) == 6 and not any(f.done() for f in pending)
            holder.kill()
            issued = [f.result(timeout=10) for f in pending]
        # One group is one transaction: its request rows share the instant the group wrote them.
        with sqlite3.connect(tmp_path / "vimark.db") as conn:
            instants = {at for (at,) in conn.execute("SELECT at FROM issue_requests")}
        assert len(instants) == 1 and len({i.change_id for i in issued}) == 6
    finally:
        store.close()


def test_issue_groups_checkpoint_after_the_turn_and_a_failed_checkpoint_fails_no_issue(
    tmp_path: Path, keys_dir: Path, clock: MovableClock, caplog: pytest.LogCaptureFixture
) -> None:
    store, issuer = _issuing_store(tmp_path, keys_dir, clock, 48)
    plates = _plates(48)
    try:
        for i in range(16):  # 16 groups of one
            issuer.issue(_grant(f"a{i}", plates[i]))
        # The database file alone (its WAL left behind) holds what was checkpointed.
        alone = tmp_path / "alone.db"
        alone.write_bytes((tmp_path / "vimark.db").read_bytes())
        assert _marks_in(alone) == 16

        failures = iter([Unavailable("database unavailable: disk I/O error"), sqlite3.DatabaseError("malformed")])

        def broken() -> None:
            raise next(failures)

        store._db.checkpoint = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="vimark.server"):
            issued = [issuer.issue(_grant(f"b{i}", plates[16 + i])) for i in range(32)]  # two checkpoints due
        assert all(i.change_id is not None for i in issued)
        assert caplog.text.count("WAL checkpoint after Issue groups failed") == 2
        assert _marks_in(tmp_path / "vimark.db") == 48  # every Issue answered is stored
    finally:
        store.close()
