"""Bulk first issuance (BackfillMarks, `vimark marks backfill`): interrupted runs resume without
duplicates, the marks verify like any other, refusals are counted by reason, operators only.
A real server on loopback (SQLite and PostgreSQL), and a real process killed mid-run."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MovableClock, start_server, vehicle
from tls_fixtures import Connect
from vimark.client.cli.main import main as cli
from vimark.client.domain import VehicleCategory, china_date, system_clock
from vimark.client.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from vimark.client.sdk import VimarkClient
from vimark.server import backfill
from vimark.server.app import VimarkServer
from vimark.server.demo import demo_vehicles
from vimark.server.index import ValidityIndex
from vimark.server.issuer import IssueCommand, Issuer, Signer
from vimark.server.keys import KeyDirectory
from vimark.server.policy import Role
from vimark.server.records import MarkPlan, VehicleRecord
from vimark.server.store import Store
from vimark.server.store.backfill import BatchTerms, NewMark
from vimark.server.sync import ReloadableKeyRing
from vimark.server.verifier import Verifier
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

ELIGIBLE = 24  # vehicles within their recorded validity, with no mark, whose status allows one
BACKFILL = cpb.ISSUE_REASON_BACKFILL


def plate(i: int) -> str:
    return f"闽C{10000 + i}"


def registry() -> list[object]:
    """ELIGIBLE vehicles that get a mark (one with an open violation, G, and one suspended, D:
    neither forbids a new mark), and one of each kind that does not."""
    rows = [
        vehicle(plate(i), vin=f"LSVAB2BJ5KN{i:06d}", valid_until="2027-06", status_codes="GA"[i % 2] if i < 2 else "A")
        for i in range(ELIGIBLE - 1)
    ]
    rows.append(
        vehicle(plate(ELIGIBLE - 1), vin=f"LSVAB2BJ5KN{ELIGIBLE - 1:06d}", valid_until="2027-06", status_codes="D")
    )
    return [
        *rows,
        vehicle(plate(90), vin="LSVAB2BJ5KN000090", valid_until="2027-06", status_codes="C"),  # stolen
        vehicle(plate(91), vin="LSVAB2BJ5KN000091", valid_until="2026-06"),  # its validity has ended
        vehicle(plate(92), vin="LSVAB2BJ5KN000092"),  # no recorded validity
        vehicle(plate(93), vin="LSVAB2BJ5KN000093", valid_until="2027-06"),  # marked by Issue below
    ]


def fill(client: VimarkClient) -> int:
    """The registry, and one vehicle marked by an ordinary Issue; returns that mark's serial."""
    client.upsert_vehicles(registry())  # type: ignore[arg-type]
    marked = client.issue(request_id="t-1", plate_number=plate(93), plate_type="02", reason=cpb.ISSUE_REASON_TRANSFER)
    return marked.serial


def tally(messages: Iterator[pb.BackfillMarksProgress]) -> tuple[list[pb.BackfillMarksProgress], Counter[int]]:
    seen = list(messages)
    return seen, Counter({c.outcome: c.count for c in seen[-1].counts})


def backfill_marks(db_url: str) -> dict[int, list[tuple[int, str]]]:
    """Vehicle id -> its backfill marks' (serial, request id), read from the database itself."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    found: dict[int, list[tuple[int, str]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT vehicle_id, serial, request_id FROM marks WHERE reason = :r"), {"r": BACKFILL})
        for vehicle_id, serial, request_id in rows:
            found.setdefault(vehicle_id, []).append((serial, request_id))
        # Nothing half-applied: each backfill mark is its vehicle's current mark, with its request
        # row and a change-log row for its vehicle.
        current = dict(conn.execute(text("SELECT id, current_serial FROM vehicles")).all())
        requests = dict(conn.execute(text("SELECT request_id, serial FROM issue_requests")).all())
        logged = {v for (v,) in conn.execute(text("SELECT vehicle_id FROM change_log"))}
    engine.dispose()
    for vehicle_id, marks in found.items():
        for serial, request_id in marks:
            assert current[vehicle_id] == serial and requests[request_id] == serial and vehicle_id in logged
    return found


def test_an_interrupted_backfill_resumes_without_duplicates(server: VimarkServer, db_url: str) -> None:
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        issued_serial = fill(client)
        # 1. Stopped after its first batch is durable, as Ctrl-C stops `vimark marks backfill`.
        run = client.backfill_marks(batch_size=2)
        first = next(run)
        run.close()  # cancels the call: the server stops after the batch it is writing
        assert 0 < sum(c.count for c in first.counts if c.outcome == pb.BACKFILL_OUTCOME_ISSUED) < ELIGIBLE
        # 2. Run again: it continues where the first stopped (in one batch: no signing processes to start).
        seen, second = tally(client.backfill_marks(batch_size=100))
        # 3. And once more, when there is nothing left to do.
        _, third = tally(client.backfill_marks())

    marks = backfill_marks(db_url)
    assert len(marks) == ELIGIBLE and all(len(m) == 1 for m in marks.values())  # one each, no duplicates
    assert seen[-1].done and seen[-1].total == seen[-1].considered == ELIGIBLE + 4
    # Every vehicle is counted once: issued now, or marked before (by the first run, or by Issue).
    assert second[pb.BACKFILL_OUTCOME_ISSUED] + second[pb.BACKFILL_OUTCOME_ALREADY_MARKED] == ELIGIBLE + 1
    assert 0 < second[pb.BACKFILL_OUTCOME_ISSUED] < ELIGIBLE
    assert second[pb.BACKFILL_OUTCOME_STATUS_FORBIDS_ISSUE] == 1
    assert second[pb.BACKFILL_OUTCOME_OUT_OF_VALIDITY] == 1
    assert second[pb.BACKFILL_OUTCOME_NO_RECORDED_VALIDITY] == 1
    assert third == Counter(
        {
            pb.BACKFILL_OUTCOME_ALREADY_MARKED: ELIGIBLE + 1,
            pb.BACKFILL_OUTCOME_STATUS_FORBIDS_ISSUE: 1,
            pb.BACKFILL_OUTCOME_OUT_OF_VALIDITY: 1,
            pb.BACKFILL_OUTCOME_NO_RECORDED_VALIDITY: 1,
        }
    )
    assert issued_serial not in {serial for m in marks.values() for serial, _ in m}  # Issue's mark stays current


def test_backfilled_marks_verify_like_any_other(server: VimarkServer) -> None:
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        fill(client)
        _, counts = tally(client.backfill_marks())
        assert counts[pb.BACKFILL_OUTCOME_ISSUED] == ELIGIBLE
        verdicts = {}
        for i in [*range(ELIGIBLE), 90, 91, 92]:
            found = client.lookup(plate_number=plate(i), plate_type="02")
            if i >= 90:
                assert found.current_serial == 0  # refused: no mark
                continue
            mark = server.store.mark_by_serial(found.current_serial)
            assert mark is not None and mark.reason == BACKFILL and mark.valid_until == 2027 * 12 + 5
            result = client.verify(mark.qr_text)
            assert (result.reason, result.valid_until, result.plate_number) == (BACKFILL, "2027-06", plate(i))
            verdicts[i] = result.verdict
            # Present re-signs the same body: the download copy is the stored mark itself.
            if result.verdict == pb.VERDICT_VALID:
                assert client.present(plate_number=plate(i), plate_type="02").download_qr_text == mark.qr_text
    blocked = ELIGIBLE - 1  # suspended (D): its mark is issued, and Verify says the vehicle may not drive
    assert verdicts.pop(blocked) == pb.VERDICT_VEHICLE_BLOCKED
    assert set(verdicts.values()) == {pb.VERDICT_VALID}


def test_a_list_of_plates_counts_unknown_ones_and_names_a_bad_one(server: VimarkServer) -> None:
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        fill(client)
        wanted = [("02", plate(0)), ("2", plate(1)), ("02", plate(1)), ("02", plate(90)), ("02", "闽C99999")]
        seen, counts = tally(client.backfill_marks(wanted))
        assert seen[-1].total == 4  # a plate listed twice (as typed, or canonical) is one vehicle
        assert counts == Counter(
            {
                pb.BACKFILL_OUTCOME_ISSUED: 2,
                pb.BACKFILL_OUTCOME_STATUS_FORBIDS_ISSUE: 1,
                pb.BACKFILL_OUTCOME_UNKNOWN_PLATE: 1,
            }
        )
        with pytest.raises(InvalidArgument, match=r"plates\[1\]\.plate_number"):
            list(client.backfill_marks([("02", plate(2)), ("02", "not a plate")]))
        with pytest.raises(InvalidArgument, match="batch_size"):
            list(client.backfill_marks(batch_size=backfill.MAX_BATCH + 1))
        assert client.lookup(plate_number=plate(2), plate_type="02").current_serial == 0  # refused before any work


def test_only_operators_backfill_and_marks_record_the_operator(connect: Connect, tls_server: VimarkServer) -> None:
    operator = connect(Role.OPERATOR)
    operator.upsert_vehicles(registry()[:3])  # type: ignore[arg-type]
    for role in (Role.STATION, Role.REGISTRATION, Role.OWNER_SERVICE, Role.POLICE, Role.PARTNER):
        with pytest.raises(PermissionDenied):
            list(connect(role).backfill_marks())
    police = connect(Role.POLICE)
    assert police.lookup(plate_number=plate(0), plate_type="02").current_serial == 0
    _, counts = tally(operator.backfill_marks())
    assert counts[pb.BACKFILL_OUTCOME_ISSUED] == 3
    mark = tls_server.store.mark_by_serial(police.lookup(plate_number=plate(0), plate_type="02").current_serial)
    assert mark is not None and mark.issued_by == "operator/ops-1" and len(mark.issuer_fingerprint) == 64
    # Issue is not a way around the operator's command: no caller issues for this reason.
    with pytest.raises(InvalidArgument, match="reason"):
        connect(Role.REGISTRATION).issue(request_id="bf-1", plate_number=plate(1), plate_type="02", reason=BACKFILL)


def test_the_command_reports_progress_and_a_summary(
    server: VimarkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--server", f"127.0.0.1:{server.port}"]
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        fill(client)
    plates = tmp_path / "plates.csv"
    plates.write_text(f"plate_number,plate_type\n{plate(0)},02\n{plate(91)},02\n")
    assert cli(["marks", "backfill", "--plates", str(plates), *target]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "issued 1 marks; 0 vehicles already had one; 1 refused"
    assert "refused: recorded validity has ended: 1" in out and "backfill 2 vehicles in " in err
    assert cli(["marks", "backfill", "--json", *target]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["issued"] == ELIGIBLE - 1 and counts["already_marked"] == 2
    plates.write_text(f"plate_number,plate_type\n{plate(0)},02\nnope,02\n")
    assert cli(["marks", "backfill", "--plates", str(plates), *target]) == 2
    assert "line 3" in capsys.readouterr().err


def test_signing_for_a_backfill_gives_issues_exact_bytes(keys_dir: Path) -> None:
    ring = KeyDirectory(keys_dir).load()
    items = [(7 + i, plate(i), "02", f"LSVAB2BJ5KN{i:06d}", 2027 * 12 + 5) for i in range(3)]
    issued_at, valid_from = dt.datetime(2026, 11, 25, 2, tzinfo=dt.UTC), dt.date(2026, 11, 25)
    day = (valid_from - dt.date(1970, 1, 1)).days
    texts = backfill.sign_items(backfill.SigningKeys.of(ring).signer(), items, int(issued_at.timestamp()), day)
    for (serial, number, plate_type, vin, month), text in zip(items, texts, strict=True):
        car = VehicleRecord(
            0, plate_type, number, vin, VehicleCategory.SMALL_PASSENGER, valid_from, 5, False, 0, month, 0
        )
        # The body Issue would sign for these terms, signed by Issue's own Signer.
        body = Issuer.body(serial, car, MarkPlan(month, BACKFILL, issued_at, valid_from), cpb.PRESENTATION_OFFLINE)
        assert text == Signer(ring).sign(body)[0]


_KILLED_RUN = """
import sys
from vimark.client.domain import system_clock
from vimark.server.backfill import Backfiller
from vimark.server.keys import KeyDirectory
from vimark.server.store import Store
from vimark.server.store.backfill import BatchTerms, NewMark
from vimark.server.sync import ReloadableKeyRing
from vimark.server.verifier import Verifier

store = Store(sys.argv[1])
ring = KeyDirectory(sys.argv[2]).load()
for progress in Backfiller(store, lambda: ring, system_clock, workers=2).run(issued_by="operator/ops", batch_size=8):
    print(progress.counts.get(1, 0), flush=True)
"""


def test_a_killed_backfill_process_leaves_whole_batches_and_a_rerun_finishes(tmp_path: Path, keys_dir: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'vimark.db'}"
    store = Store(db_url)
    vehicles = demo_vehicles(400, china_date(system_clock()), 11)
    store.upsert_vehicles(vehicles)
    eligible = {
        v.plate_number
        for v in vehicles
        if backfill.judge(
            backfill.Candidate(0, "", "", "", v.status_bits, v.valid_until, 0), china_date(system_clock())
        )
        is None
    }
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_RUN), db_url, str(keys_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    for line in process.stdout:
        if int(line) >= 24:  # a few batches durable, more being signed and written
            break
    process.send_signal(signal.SIGKILL)  # no cleanup of any kind: as a crash or a power cut
    process.wait(timeout=30)
    before = backfill_marks(db_url)  # whole batches only: each mark with its request and change rows
    assert 24 <= len(before) < len(eligible)

    ring = KeyDirectory(keys_dir).load()
    runs = backfill.Backfiller(store, lambda: ring, system_clock, workers=0).run(issued_by="operator/ops")
    last = list(runs)[-1]
    after = backfill_marks(db_url)
    assert len(after) == len(eligible) and all(len(m) == 1 for m in after.values())
    assert last.counts[backfill.Outcome.ISSUED] == len(eligible) - len(before)
    assert last.counts[backfill.Outcome.ALREADY_MARKED] == len(before)
    store.close()


def test_serials_an_issue_took_meanwhile_are_signed_again(tmp_path: Path, keys_dir: Path, clock: MovableClock) -> None:
    """SQLite: a batch signed with the next serials, then an Issue takes one of them before the
    batch is written: the batch is signed again with free serials in its transaction."""
    store = Store(f"sqlite:///{tmp_path / 'vimark.db'}")
    today = china_date(clock())
    store.upsert_vehicles([v for v in demo_vehicles(60, today, 3) if v.valid_until and not v.status_bits][:2])
    ring = KeyDirectory(keys_dir).load()
    keys = backfill.SigningKeys.of(ring)
    first, second = store.backfill.scan(0, 2)
    terms = BatchTerms(BACKFILL, int(clock().timestamp()), today, "operator/ops", "", "d" * 64)
    day = (today - dt.date(1970, 1, 1)).days

    def signed(vehicles: list[backfill.Candidate], serials: list[int]) -> list[NewMark]:
        items = [
            (s, v.plate_number, v.plate_type, v.vin, v.valid_until or 0) for s, v in zip(serials, vehicles, strict=True)
        ]
        texts = backfill.sign_items(keys.signer(), items, terms.issued_at, day)
        return [
            NewMark(v, s, backfill.request_id(v), t, keys.key_id)
            for v, s, t in zip(vehicles, serials, texts, strict=True)
        ]

    planned = signed([first], store.backfill.reserve_serials(1))
    issuer = Issuer(store, Signer(ring), clock)
    taken = issuer.issue(
        IssueCommand("t-1", second.plate_type, second.plate_number, "", cpb.ISSUE_REASON_TRANSFER, None, "")
    )
    assert taken.mark.serial == planned[0].serial  # the Issue took the serial the batch was signed with
    calls: list[list[int]] = []

    def resign(marks: list[NewMark], serials: list[int]) -> list[NewMark]:
        calls.append(serials)
        return signed([m.vehicle for m in marks], serials)

    written = store.backfill.write(planned, terms, resign)
    assert calls and written.marks[0].serial == calls[0][0] != planned[0].serial
    stored = store.mark_by_serial(written.marks[0].serial)
    assert stored is not None and stored.qr_text == written.marks[0].qr_text and stored.vehicle_id == first.vehicle_id
    index = ValidityIndex()
    last, vehicles, revoked = store.snapshot()
    index.load(last, vehicles, revoked)
    verdict = Verifier(index, ReloadableKeyRing(KeyDirectory(keys_dir)), clock).verify(stored.qr_text).verdict
    assert verdict == pb.VERDICT_VALID
    store.close()


def test_ctrl_c_stops_the_command_cleanly_and_says_how_to_resume(tmp_path: Path, keys_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'vimark.db'}")
    # Enough for the run to last seconds: with 300 it could end (in 0.3 s) before the interrupt came.
    store.upsert_vehicles(demo_vehicles(3000, china_date(system_clock()), 5))
    store.close()
    server = start_server(f"sqlite:///{tmp_path / 'vimark.db'}", keys_dir, system_clock)  # type: ignore[arg-type]
    try:
        command = [sys.executable, "-m", "vimark.client.cli.main", "marks", "backfill", "--batch-size", "2"]
        process = subprocess.Popen(
            [*command, "--server", f"127.0.0.1:{server.port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not backfill_marks(f"sqlite:///{tmp_path / 'vimark.db'}") and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 130, err
        assert "Run the same command again to continue" in err and "Traceback" not in err
        # The server stopped too: its marks stay as they are, whole.
        time.sleep(0.5)
        stopped = backfill_marks(f"sqlite:///{tmp_path / 'vimark.db'}")
        time.sleep(0.5)
        assert backfill_marks(f"sqlite:///{tmp_path / 'vimark.db'}") == stopped
    finally:
        server.stop(grace=1)


def test_a_key_rotation_during_a_run_stops_it(tmp_path: Path, keys_dir: Path, clock: MovableClock) -> None:
    store = Store(f"sqlite:///{tmp_path / 'vimark.db'}")
    store.upsert_vehicles(demo_vehicles(60, china_date(clock()), 9))
    directory = KeyDirectory(keys_dir)
    rings = [directory.load()]
    run = backfill.Backfiller(store, lambda: rings[-1], clock, workers=0).run(issued_by="operator/ops", batch_size=5)
    first = next(run)
    assert first.counts[backfill.Outcome.ISSUED] == 5
    directory.rotate()
    rings.append(directory.load())
    with pytest.raises(FailedPrecondition, match="run it again"):
        list(run)
    assert len(backfill_marks(f"sqlite:///{tmp_path / 'vimark.db'}")) == 5  # signed with the old key: not written
    store.close()


def test_two_backfills_at_once_never_issue_a_vehicle_twice(server: VimarkServer, db_url: str) -> None:
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        fill(client)
        runs: list[Counter[int]] = []

        def run() -> None:
            runs.append(tally(client.backfill_marks(batch_size=3))[1])

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    marks = backfill_marks(db_url)
    assert len(marks) == ELIGIBLE and all(len(m) == 1 for m in marks.values())
    issued = sum(r[pb.BACKFILL_OUTCOME_ISSUED] for r in runs)
    assert len(runs) == 2 and issued == ELIGIBLE  # each vehicle issued by one of them; the other skipped it
    for counts in runs:
        assert (
            counts[pb.BACKFILL_OUTCOME_ISSUED]
            + counts[pb.BACKFILL_OUTCOME_ALREADY_MARKED]
            + counts[pb.BACKFILL_OUTCOME_CHANGED]
            == ELIGIBLE + 1
        )
