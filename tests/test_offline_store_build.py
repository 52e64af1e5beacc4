"""The status snapshot built from a real store (SQLite and PostgreSQL): each mark's signed plate
and VIN kept at issue (migration 0005) and joined in SQL; rows stored without them (older ones)
read from their QR text; serials with no mark row in the range answered as newer than the data,
never SUPERSEDED; a build in progress never holds up a request for the latest one."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import vimark.server.terminal_status as terminal_status
from conftest import MovableClock, start_server, vehicle
from vimark.client.offline import OfflineVerifier
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.cli.main import main
from vimark.server.store import Store
from vimark.server.terminal_keys import AnchorDirectory, OnlineKeyDirectory
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

V = pb.Verdict


@pytest.fixture
def police(db_url: str, keys_dir: Path, clock: MovableClock, tmp_path: Path) -> Iterator[tuple[VimarkServer, Path]]:
    anchor = AnchorDirectory(tmp_path / "anchor")
    anchor.init()
    OnlineKeyDirectory(tmp_path / "online", clock).rotate(anchor)
    server = start_server(
        db_url, keys_dir, clock, terminal_keys_dir=tmp_path / "online", terminal_refresh=dt.timedelta(0)
    )
    yield server, tmp_path / "anchor" / "anchor.pub"
    server.stop(grace=1)


def _sync(server: VimarkServer, anchor: Path, terminal: Path) -> None:
    args = ["terminal", "sync", str(terminal), "--server", f"127.0.0.1:{server.port}", "--full"]
    assert main([*args, "--anchor", str(anchor)]) == 0


def test_signed_plates_kept_at_issue_legacy_rows_and_gaps(
    db_url: str, police: tuple[VimarkServer, Path], clock: MovableClock, tmp_path: Path
) -> None:
    server, anchor = police
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as c:
        plates = [f"闽C{n:05d}" for n in range(20, 25)]
        c.upsert_vehicles(
            [
                vehicle(plate_number=p, vin=f"LSVAB2BJ5KN{n:06d}", registered_on="2026-11-02")
                for n, p in enumerate(plates, 20)
            ]
        )
        texts = [
            c.issue(request_id=f"r{i}", reason=cpb.ISSUE_REASON_REGISTRATION, plate_number=p, plate_type="02").qr_text
            for i, p in enumerate(plates)
        ]
        serials = [c.verify(t).serial for t in texts]
        # Re-plated since its mark was issued: that mark names a plate nobody holds now.
        moved_vin = c.lookup(plate_number=plates[3], plate_type="02").vin
        c.upsert_vehicles([vehicle(plate_number="闽C00088", vin=moved_vin)])
        engine = create_engine(db_url)
        try:
            with engine.begin() as conn:
                row = conn.execute(
                    text("SELECT signed_plate_type, signed_plate_number, signed_vin FROM marks WHERE serial = :s"),
                    {"s": serials[0]},
                ).one()
                assert tuple(row) == ("02", plates[0], "LSVAB2BJ5KN000020")  # kept at issue
                # Rows as migration 0005 leaves older ones: no signed plate, read from the QR text.
                conn.execute(
                    text(
                        "UPDATE marks SET signed_plate_type = '', signed_plate_number = '', signed_vin = ''"
                        " WHERE serial IN (:a, :b)"
                    ),
                    {"a": serials[0], "b": serials[3]},
                )
                # A serial whose transaction rolled back (or has not committed): no row, and its
                # vehicle never got it. Both neighbours have rows: a gap inside the range.
                conn.execute(text("DELETE FROM issue_requests WHERE serial = :s"), {"s": serials[2]})
                conn.execute(text("DELETE FROM marks WHERE serial = :s"), {"s": serials[2]})
                conn.execute(text("UPDATE vehicles SET current_serial = 0 WHERE plate_number = :p"), {"p": plates[2]})
        finally:
            engine.dispose()
        online = {i: c.verify(texts[i]).verdict for i in (0, 1, 3, 4)}
    terminal = tmp_path / "terminal"
    _sync(server, anchor, terminal)
    offline = OfflineVerifier.open(terminal, clock)
    for i, verdict in online.items():
        assert V.Name(offline.verify(texts[i]).verdict) == V.Name(verdict), i
    assert online[0] == V.VERDICT_VALID and online[3] == V.VERDICT_UNKNOWN_VEHICLE
    assert offline.status.missing == {serials[2]}
    gap = offline.verify(texts[2])
    assert gap.verdict == V.VERDICT_UNSPECIFIED and gap.why == "offline.NEWER_THAN_STATUS"


class _SlowStore:
    """The real store, whose status read can be held (to see a request not wait for a build)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hold = threading.Event()
        self.hold.set()

    def status_facts(self, *args: object) -> object:
        self.hold.wait(30)
        return self.store.status_facts(*args)  # type: ignore[arg-type]


def test_a_request_is_served_the_latest_build_while_a_new_one_runs(
    sqlite_url: str, keys_dir: Path, clock: MovableClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    anchor = AnchorDirectory(tmp_path / "anchor")
    anchor.init()
    online = OnlineKeyDirectory(tmp_path / "online", clock)
    online.rotate(anchor)
    server = start_server(sqlite_url, keys_dir, clock)
    try:
        slow = _SlowStore(server.store)
        data = terminal_status.TerminalData(
            slow,  # type: ignore[arg-type]
            server.keys.current,
            online.load,
            clock,
            refresh=dt.timedelta(minutes=1),
        )
        first = data.snapshot()
        monkeypatch.setattr(terminal_status, "BUILD_WAIT", dt.timedelta(seconds=0.2))
        slow.hold.clear()  # the next build's store read hangs
        clock.advance(minutes=2)
        started = time.monotonic()
        assert data.snapshot() is first  # served the latest built, not held up by the build
        assert data.delta(first.state.change_id, first.state.digest()) is not None
        assert time.monotonic() - started < 5
        slow.hold.set()
        deadline = time.monotonic() + 10
        while data.snapshot() is first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert data.snapshot().state.made_at > first.state.made_at
    finally:
        slow.hold.set()
        server.stop(grace=1)


def test_the_store_benchmark_runs_and_agrees_with_the_arrays() -> None:
    """`python -m load.offline --store sqlite` builds from a real store, checked against the arrays."""
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "load.offline", "--store", "sqlite", "--vehicles", "1000", "--repeat", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["marks"] == 1500 and result["build_seconds"] > 0
