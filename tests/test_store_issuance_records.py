"""`Store.issue` at the store's level, on SQLite and PostgreSQL: who issued a mark is kept with it;
a copy (CopyPlan) answers with the vehicle's current mark and writes no mark and no change-log
row, re-signed when asked; every answered request is recorded, so a retry (even with other
parameters, or racing on another server) gets the first answer and its digest; a mark granted
before issue_requests existed still answers its request; the SQLite file is private (0600)."""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from vimark.client.domain import VehicleCategory, month_of
from vimark.client.errors import InternalError, InvalidArgument
from vimark.server.records import CopyPlan, MarkPlan, MarkRecord, VehicleRecord
from vimark.server.store import MIGRATIONS, Store

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
PLATES = ("闽C12345", "闽C54321")
STATION = "station/ST-0571-01"
FINGERPRINT = "3f" * 32


def _vehicle(i: int) -> VehicleRecord:
    return VehicleRecord(
        vehicle_id=0,
        plate_type="02",
        plate_number=PLATES[i],
        vin=f"LSVAB2BJ5KN00000{i}",
        category=VehicleCategory.SMALL_PASSENGER,
        registered_on=dt.date(2024, 11, 2),
        seats=5,
        exemption_lost=False,
        status_bits=0,
        valid_until=None,
        current_serial=0,
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upsert_vehicles([_vehicle(0), _vehicle(1)])
    yield s
    s.close()


PLAN = MarkPlan(
    valid_until=month_of(dt.date(2028, 11, 1)),
    reason=1,
    issued_at=NOW,
    valid_from=dt.date(2026, 11, 25),
    inspected_on=dt.date(2026, 11, 24),
    station_id="ST-0571-01",
    issued_by=STATION,
    issuer_fingerprint=FINGERPRINT,
)


class Signer:
    """Stands in for the issuer's signer: a QR text naming the serial and the key, every call kept."""

    def __init__(self, key_id: int = 1) -> None:
        self.key_id = key_id
        self.calls: list[tuple[int, VehicleRecord, Any]] = []

    def __call__(self, serial: int, vehicle: VehicleRecord, terms: MarkPlan | MarkRecord) -> tuple[str, int]:
        self.calls.append((serial, vehicle, terms))
        return f"QR-{serial}-K{self.key_id}", self.key_id


def grant(_vehicle: VehicleRecord, _current: MarkRecord | None) -> MarkPlan:
    return PLAN


def copy(resign: bool = False) -> Any:
    def decide(_vehicle: VehicleRecord, current: MarkRecord | None) -> CopyPlan:
        assert current is not None
        return CopyPlan(resign=resign)

    return decide


def not_again(_vehicle: VehicleRecord, _current: MarkRecord | None) -> MarkPlan:
    raise AssertionError("a replay must not be decided again")


def last_change(store: Store) -> int:
    return store.snapshot()[0]


def count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_a_grant_records_who_issued_it_and_reads_it_back(store: Store) -> None:
    sign = Signer()
    mark, replayed, change_id, digest = store.issue("g-1", "02", PLATES[0], grant, sign, digest="d" * 64)
    assert (replayed, digest) == (False, "d" * 64) and change_id is not None
    assert (mark.issued_by, mark.issuer_fingerprint, mark.station_id) == (STATION, FINGERPRINT, "ST-0571-01")
    assert (mark.qr_text, mark.key_id) == (f"QR-{mark.serial}-K1", 1)
    assert sign.calls == [(mark.serial, sign.calls[0][1], PLAN)]  # signed once, with the plan
    assert store.mark_by_serial(mark.serial) == mark  # what was answered is what was stored
    assert store.mark_by_request_id("g-1") == mark
    # The vehicle's current mark, made so by the change-log row returned.
    change = store.changes_since(change_id - 1)[0]
    assert (change.change_id, change.vehicle.current_serial) == (change_id, mark.serial)


def test_a_plan_whose_texts_do_not_fit_is_refused_alone(store: Store) -> None:
    def too_long(_vehicle: VehicleRecord, _current: MarkRecord | None) -> MarkPlan:
        return MarkPlan(PLAN.valid_until, 1, NOW, PLAN.valid_from, issued_by="x" * 81)

    with pytest.raises(InvalidArgument, match="issued_by"):
        store.issue("long", "02", PLATES[0], too_long, Signer())
    with pytest.raises(InvalidArgument, match="digest"):
        store.issue("long", "02", PLATES[0], grant, Signer(), digest="d" * 65)
    assert store.mark_by_request_id("long") is None


def test_a_copy_answers_the_current_mark_and_writes_no_mark_nor_change(store: Store, db_url: str) -> None:
    granted, *_ = store.issue("g-1", "02", PLATES[0], grant, Signer())
    before = last_change(store)
    sign = Signer()
    answer = store.issue("dl-1", "02", PLATES[0], copy(), sign, digest="copy-digest")
    assert answer == (granted, False, None, "copy-digest")
    assert sign.calls == []  # not re-signed: the stored QR text is the copy
    assert store.changes_since(before) == [] and last_change(store) == before
    assert count(db_url, "marks") == 1 and count(db_url, "issue_requests") == 2
    assert store.mark_by_request_id("dl-1") == granted  # the request is recorded, with its answer
    # A retry of the copy request is a replay: the same mark, its digest, nothing decided or written.
    assert store.issue("dl-1", "02", PLATES[0], not_again, sign, digest="other") == (granted, True, None, "copy-digest")
    assert store.changes_since(before) == [] and count(db_url, "issue_requests") == 2


def test_a_copy_resigned_stores_its_new_signature_on_the_mark(store: Store) -> None:
    granted, *_ = store.issue("g-1", "02", PLATES[0], grant, Signer(key_id=1))
    before = last_change(store)
    sign = Signer(key_id=2)  # the key was rotated since
    mark, replayed, change_id, _ = store.issue("dl-2", "02", PLATES[0], copy(resign=True), sign)
    assert (replayed, change_id) == (False, None)
    assert [(serial, terms) for serial, _, terms in sign.calls] == [(granted.serial, granted)]  # the mark's terms
    assert (mark.serial, mark.qr_text, mark.key_id) == (granted.serial, f"QR-{granted.serial}-K2", 2)
    assert mark == replace(granted, qr_text=mark.qr_text, key_id=2)  # nothing else changed
    assert store.mark_by_serial(granted.serial) == mark  # the row holds the new signature
    assert store.changes_since(before) == []
    # Replays of either request read the mark as it now is.
    assert store.issue("dl-2", "02", PLATES[0], not_again, sign)[:2] == (mark, True)
    assert store.issue("g-1", "02", PLATES[0], not_again, sign)[:2] == (mark, True)


def test_a_copy_of_no_mark_is_that_commands_error(store: Store) -> None:
    def confused(_vehicle: VehicleRecord, _current: MarkRecord | None) -> CopyPlan:
        return CopyPlan(resign=False)

    with pytest.raises(InternalError):
        store.issue("c-0", "02", PLATES[1], confused, Signer())
    assert store.mark_by_request_id("c-0") is None  # nothing recorded: a retry is decided afresh


def test_one_request_id_with_two_digests_is_one_answer_with_the_first_digest(store: Store, db_url: str) -> None:
    first = store.issue("same", "02", PLATES[0], grant, Signer(), digest="aaaa")
    second = store.issue("same", "02", PLATES[0], not_again, Signer(), digest="bbbb")
    assert first[1:] == (False, first[2], "aaaa")
    assert second == (first[0], True, None, "aaaa")  # the caller compares digests, not the store
    # Together (one group or two, as the threads fall): one mark, one replay carrying the other's digest.
    barrier = threading.Barrier(2)
    results: dict[str, tuple[MarkRecord, bool, int | None, str]] = {}

    def one(digest: str) -> None:
        barrier.wait()
        results[digest] = store.issue("together", "02", PLATES[1], grant, Signer(), digest=digest)

    threads = [threading.Thread(target=one, args=(d,)) for d in ("x1", "x2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    (fresh,) = [d for d, r in results.items() if not r[1]]
    (replay,) = [r for r in results.values() if r[1]]
    assert replay == (results[fresh][0], True, None, fresh)
    assert count(db_url, "marks") == 2


def test_two_servers_racing_on_one_request_id_give_one_answer(db_url: str) -> None:
    """Server B decides while server A commits the same request_id (for another vehicle): B's
    request row then collides with A's and B answers with A's mark, as a retry would. On SQLite
    the writer lock makes A wait for B instead: then A replays B's answer."""
    a, b = Store(db_url), Store(db_url)
    a.upsert_vehicles([_vehicle(0), _vehicle(1)])
    deciding, a_done = threading.Event(), threading.Event()
    results: dict[str, tuple[MarkRecord, bool, int | None, str]] = {}

    def slow(_vehicle: VehicleRecord, _current: MarkRecord | None) -> MarkPlan:
        deciding.set()
        a_done.wait(1.5)  # PostgreSQL: A commits meanwhile; SQLite: A waits for the writer lock
        return PLAN

    def run_b() -> None:
        results["b"] = b.issue("race", "02", PLATES[1], slow, Signer(), digest="from-b")

    def run_a() -> None:
        results["a"] = a.issue("race", "02", PLATES[0], grant, Signer(), digest="from-a")
        a_done.set()

    tb = threading.Thread(target=run_b)
    tb.start()
    assert deciding.wait(10)
    ta = threading.Thread(target=run_a)
    ta.start()
    ta.join(30)
    tb.join(30)
    try:
        winner, loser = ("b", "a") if results["a"][1] else ("a", "b")
        assert results[loser] == (results[winner][0], True, None, f"from-{winner}")
        assert results[winner][1] is False and results[winner][2] is not None
        if db_url.startswith("postgresql"):
            assert winner == "a"  # B lost the race after deciding, and replayed
        assert count(db_url, "marks") == 1 and count(db_url, "issue_requests") == 1
        # B's vehicle was not touched by its lost command.
        assert [c.vehicle.current_serial for c in b.changes_since(0) if c.vehicle.plate_number == PLATES[1]][-1] == (
            results[winner][0].serial if winner == "b" else 0
        )
    finally:
        a.close()
        b.close()


def test_a_mark_without_a_request_row_still_answers_its_request(store: Store, db_url: str) -> None:
    """A mark with no request row (its row lost; before 0003 there were none): a retry of its
    request is decided again, collides with the mark's request_id,
    and is answered with that mark (digest unknown), the decision undone."""
    granted, *_ = store.issue("old", "02", PLATES[0], grant, Signer())
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM issue_requests WHERE request_id = 'old'"))
    engine.dispose()
    before = last_change(store)
    assert store.issue("old", "02", PLATES[0], grant, Signer(), digest="new") == (granted, True, None, "")
    assert last_change(store) == before and count(db_url, "marks") == 1
    assert store.mark_by_request_id("old") == granted


def test_migration_records_a_request_for_every_existing_mark(db_url: str) -> None:
    """A database at revision 0002 with a mark: after the upgrade, its request is a replay."""
    s = Store(db_url, migrate=False)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with s.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    with s.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO vehicles (id, plate_type, plate_number, vin, category, registered_on, seats,"
                " exemption_lost, status_bits, valid_until, current_serial) VALUES (1, '02', :plate,"
                " 'LSVAB2BJ5KN000000', 'small_passenger', '2024-11-02', 5, false, 0, :until, 7)"
            ),
            {"plate": PLATES[0], "until": PLAN.valid_until},
        )
        conn.execute(
            text(
                "INSERT INTO marks (serial, request_id, vehicle_id, valid_until, reason, issued_at, valid_from,"
                " inspected_on, station_id, key_id, qr_text, revoked, revoked_reason) VALUES (7, 'before', 1,"
                " :until, 1, :at, '2026-11-25', NULL, 'ST-1', 1, 'QR-7', false, '')"
            ),
            {"until": PLAN.valid_until, "at": int(NOW.timestamp())},
        )
    s.migrate()
    try:
        mark, replayed, change_id, digest = s.issue("before", "02", PLATES[0], not_again, Signer(), digest="x")
        assert (mark.serial, mark.qr_text, mark.station_id, mark.issued_by, replayed, change_id, digest) == (
            7,
            "QR-7",
            "ST-1",
            "",
            True,
            None,
            "",
        )
    finally:
        s.close()


def test_the_sqlite_file_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a permissive umask: the mode must come from the store, not from it
    try:
        db = tmp_path / "vimark.db"
        s = Store(f"sqlite:///{db}")
        try:
            s.upsert_vehicles([_vehicle(0)])
            s.issue("g-1", "02", PLATES[0], grant, Signer())
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
        finally:
            s.close()
        # A file that exists keeps the mode it has (the operator's choice).
        other = tmp_path / "shared.db"
        other.touch(0o640)
        other.chmod(0o640)
        Store(f"sqlite:///{other}").close()
        assert stat.S_IMODE(other.stat().st_mode) == 0o640
    finally:
        os.umask(old)
