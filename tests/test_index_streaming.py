"""A start that streams (issue 9): the index loaded chunk by chunk from `Store.snapshot_chunks`
is the index `load` builds from `Store.snapshot`, on SQLite and PostgreSQL, whatever the chunk
size; and the chunks are read in the snapshot's one consistent view."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from vimark.client.domain import VehicleCategory, month_of
from vimark.client.errors import InvalidArgument
from vimark.server.index import ValidityIndex
from vimark.server.records import MarkPlan, MarkRecord, VehicleRecord
from vimark.server.store import Store

N = 2_503  # vehicles; a prime, so no chunk size below divides it
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
CATEGORIES = list(VehicleCategory)


def _vehicle(i: int) -> VehicleRecord:
    return VehicleRecord(
        vehicle_id=0,
        plate_type=("01", "02", "15", "23")[i % 4],
        plate_number=f"闽C{i:05d}" if i % 5 else f"京A{i:05d}警",
        vin=f"LSVAB2BJ5KN{i:06d}",
        category=CATEGORIES[i % len(CATEGORIES)],
        registered_on=dt.date(1995, 1, 1) + dt.timedelta(days=i * 7),
        seats=0 if i % 3 == 0 else 2 + i % 50,  # 0 = unknown
        exemption_lost=i % 11 == 0,
        status_bits=0,
        valid_until=None if i % 4 == 0 else month_of(dt.date(2026, 1, 1)) + i % 40,  # missing validity
        current_serial=0,
    )


def _grant(_vehicle: VehicleRecord, _current: MarkRecord | None) -> MarkPlan:
    return MarkPlan(valid_until=month_of(dt.date(2028, 11, 1)), reason=1, issued_at=NOW, valid_from=NOW.date())


def _sign(serial: int, _vehicle: VehicleRecord, _terms: object) -> tuple[str, int]:
    return f"QR-{serial}", 1


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    vehicles = [_vehicle(i) for i in range(1, N + 1)]
    for start in range(0, N, 1000):
        s.upsert_vehicles(vehicles[start : start + 1000])
    serials = []
    for i in range(1, N + 1, 37):  # marks (two for some: the first superseded)
        v = vehicles[i - 1]
        for attempt in range(1 + (i % 2)):
            mark, *_ = s.issue(f"r-{i}-{attempt}", v.plate_type, v.plate_number, _grant, _sign)
            serials.append(mark.serial)
    for serial in serials[::5]:
        s.revoke_mark(serial, "test")
    for i in range(3, N + 1, 29):  # statuses
        v = vehicles[i - 1]
        s.set_status(v.plate_type, v.plate_number, 1 + i % 7)
    yield s
    s.close()


def _streamed(store: Store, chunk: int) -> ValidityIndex:
    index = ValidityIndex()
    with store.snapshot_chunks(chunk) as snapshot:
        index.load_snapshot(snapshot)
    return index


def test_a_streamed_index_is_the_index_load_builds(store: Store) -> None:
    old = ValidityIndex()
    last, vehicles, revoked = store.snapshot()
    old.load(last, vehicles, revoked)
    assert len(vehicles) == N and revoked and any(v.valid_until is None for v in vehicles)
    assert any(v.current_serial for v in vehicles) and any(v.status_bits for v in vehicles)
    for chunk in (1_000, 97, N + 1):  # not dividing N, small, all in one
        new = _streamed(store, chunk)
        assert new.checksum() == old.checksum(), chunk
        assert len(new) == len(old) == N
        assert new.nbytes() == old.nbytes()  # sized alike
        assert new.last_change_id == last > 0
        assert all(new.is_revoked(s) for s in revoked)
    for v in vehicles:  # every vehicle, by plate and by VIN, reads as the store has it
        assert new.by_plate(v.plate_type, v.plate_number) == v
        assert new.by_vin(v.vin) == v
    assert new.by_plate("02", "闽C99999") is None and new.by_vin("LSVAB2BJ5KN999999") is None


def test_a_streamed_index_follows_the_change_log_as_a_loaded_one_does(store: Store) -> None:
    new = _streamed(store, 500)
    old = ValidityIndex()
    old.load(*store.snapshot())
    v = _vehicle(N + 1)
    store.upsert_vehicles([v])
    store.set_status("23", "闽C00003", 0)  # had a status
    for index in (new, old):
        index.apply(store.changes_since(index.last_change_id, 100))
    assert new.checksum() == old.checksum()
    assert new.by_vin(v.vin) == old.by_vin(v.vin) is not None


def test_the_chunks_are_read_in_the_snapshots_one_view(store: Store) -> None:
    with store.snapshot_chunks(300) as snapshot:
        first = next(snapshot.chunks)
        store.upsert_vehicles([_vehicle(N + 1)])  # committed while the snapshot streams
        rest = list(snapshot.chunks)
    ids = [i for columns in (first, *rest) for i in columns.vehicle_id]
    assert len(ids) == len(set(ids)) == N and max(ids) == snapshot.max_vehicle_id
    assert snapshot.last_change_id < store.snapshot()[0]
    with store.snapshot_chunks(300) as snapshot:
        assert sum(len(c.vehicle_id) for c in snapshot.chunks) == N + 1


def test_an_empty_store_streams_an_empty_index(db_url: str) -> None:
    s = Store(db_url)
    try:
        old = ValidityIndex()
        old.load(*s.snapshot())
        new = _streamed(s, 10)
        assert new.checksum() == old.checksum() and len(new) == 0 and new.nbytes() == old.nbytes()
        with pytest.raises(InvalidArgument):
            _streamed(s, 0)
    finally:
        s.close()


def test_the_sqlite_range_reader_skips_wide_gaps_and_reads_odd_values_row_by_row(store: Store, db_url: str) -> None:
    """SQLite's start reads a range of ids per aggregate query (store/reads.py): a gap in the ids
    wider than a range is skipped, not read range by empty range, and a stored value that holds
    one of the aggregate's separators (no registry row can: this one is written past the store's
    checks) sends its range to the row-by-row read; either way the index is the one `load` builds."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the range reader is SQLite's; PostgreSQL streams rows off a server-side cursor")
    import sqlite3

    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "INSERT INTO vehicles (id, plate_type, plate_number, vin, category, registered_on, seats,"
            " exemption_lost, status_bits, valid_until, current_serial)"
            " VALUES (5000000, '02', ?, 'LSVAB2BJ5KN900001', 'goods', '2001-02-03', 3, 1, 4, NULL, 0)",
            ("闽C\n1,2",),
        )
    old = ValidityIndex()
    old.load(*store.snapshot())
    for chunk in (97, 5_000):
        new = _streamed(store, chunk)
        assert new.checksum() == old.checksum() and len(new) == N + 1, chunk
        assert new.by_vin("LSVAB2BJ5KN900001") == old.by_vin("LSVAB2BJ5KN900001") is not None


def test_a_range_whose_text_does_not_parse_is_refused_not_misread() -> None:
    """The range reader's parser (store/reads.py) answers None, so that range is read row by row,
    when a numeric column's text is not whole numbers or a column splits into another count."""
    from vimark.server.store.reads import _parse_range

    good = ["1,2", "2,2", "闽C00001\n闽C00002", "V1\nV2", "goods\ngoods", "1,2", "3,4", "0,1", "0,0", "0,0", "0,0"]
    assert _parse_range(2, good) is not None
    assert _parse_range(2, [good[0], "2,2.5", *good[2:]]) is None  # a REAL in a number column
    assert _parse_range(2, [*good[:2], "闽C\n1\n闽C00002", *good[3:]]) is None  # a separator inside a value
