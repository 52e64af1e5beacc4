"""The validity index: derived from the store, rebuilt identically, converging across servers."""

from __future__ import annotations

import datetime as dt
import random
import time
from concurrent import futures
from pathlib import Path

import numpy as np

from conftest import MovableClock, start_server, vehicle
from vimark.client.domain import VehicleCategory
from vimark.client.sdk import VimarkClient
from vimark.server import index as index_module
from vimark.server.index import ValidityIndex
from vimark.server.records import Change, VehicleRecord
from vimark.server.store import Store
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb


def record(i: int, plate: str, vin: str, **overrides: object) -> VehicleRecord:
    fields: dict[str, object] = dict(
        vehicle_id=i,
        plate_type="02",
        plate_number=plate,
        vin=vin,
        category=VehicleCategory.SMALL_PASSENGER,
        registered_on=dt.date(2024, 5, 1),
        seats=5,
        exemption_lost=False,
        status_bits=0,
        valid_until=24315,
        current_serial=i * 10,
    )
    fields.update(overrides)
    return VehicleRecord(**fields)  # type: ignore[arg-type]


def test_lookups_survive_rebuilds_plate_moves_and_hash_collisions(monkeypatch: object) -> None:
    index = ValidityIndex(capacity=2)
    index.load(0, [record(1, "闽C00001", "V" * 16 + "1"), record(2, "闽C00002", "V" * 16 + "2")], [])
    # 1. Plate moves from vehicle 1 to vehicle 3 (a delta over the base): the new holder wins.
    index.apply(
        [Change(1, record(1, "闽C00009", "V" * 16 + "1"), None), Change(2, record(3, "闽C00001", "V" * 16 + "3"), None)]
    )
    found = index.by_plate("02", "闽C00001")
    assert found is not None and found.vehicle_id == 3
    assert index.by_plate("02", "闽C00009").vehicle_id == 1  # type: ignore[union-attr]
    assert index.by_plate("01", "闽C00001") is None  # same number, other plate type
    # 2. After a rebuild of the sorted base the answers are the same.
    before = index.checksum()
    index._rebuild_lookups()
    assert index.by_plate("02", "闽C00001").vehicle_id == 3  # type: ignore[union-attr]
    assert index.by_vin("V" * 16 + "1").plate_number == "闽C00009"  # type: ignore[union-attr]
    assert index.checksum() == before
    # 3. Replayed change rows are skipped.
    assert index.apply([Change(2, record(3, "闽C00001", "V" * 16 + "3"), None)]) == 0


def test_hash_collisions_are_confirmed_against_the_stored_plate(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The Python probe's (the compiled one hashes for itself: tests/test_hotpath.py collides its rows).
    monkeypatch.setattr(index_module, "_compiled", lambda: None)
    monkeypatch.setattr(index_module, "plate_hash", lambda plate_type, plate: 42)  # every key collides
    monkeypatch.setattr(index_module, "vin_hash", lambda vin: 43)
    index = ValidityIndex()
    index.load(0, [record(i, f"闽C0000{i}", "V" * 16 + str(i)) for i in range(1, 6)], [])
    for i in range(1, 6):
        assert index.by_plate("02", f"闽C0000{i}").vehicle_id == i  # type: ignore[union-attr]
        assert index.by_vin("V" * 16 + str(i)).vehicle_id == i  # type: ignore[union-attr]
    assert index.by_plate("02", "闽C00007") is None


def test_memory_per_vehicle_is_small() -> None:
    index = ValidityIndex(capacity=20_000)
    index.load(0, [record(i, f"闽C{i:05d}", f"LSVAB2BJ5KN{i:06d}") for i in range(1, 20_001)], [])
    per_vehicle = index.nbytes() / len(index)
    assert per_vehicle < 110, per_vehicle  # packed rows + sorted lookups, no per-vehicle objects
    assert np.count_nonzero(index._rows["flags"] & 1) == 20_000


def _populate(client: VimarkClient, n: int) -> list[pb.IssueResponse]:
    client.upsert_vehicles(
        [vehicle(f"闽C{i:05d}", vin=f"LSVAB2BJ5KN{i:06d}", registered_on="2026-11-02") for i in range(n)]
    )
    marks = [
        client.issue(
            request_id=f"r{i}", plate_number=f"闽C{i:05d}", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
        )
        for i in range(n)
    ]
    client.set_status(plate_number="闽C00001", plate_type="02", status_codes="CG")
    client.revoke_mark(marks[2].serial, "test")
    return marks


def test_restart_rebuilds_an_identical_index(db_url: str, keys_dir: Path, clock: MovableClock) -> None:
    first = start_server(db_url, keys_dir, clock)
    with VimarkClient(f"127.0.0.1:{first.port}") as client:
        marks = _populate(client, 20)
    checksum, size = first.index.checksum(), len(first.index)
    first.stop(grace=1)
    again = start_server(db_url, keys_dir, clock)
    try:
        assert (again.index.checksum(), len(again.index)) == (checksum, size)
        with VimarkClient(f"127.0.0.1:{again.port}") as client:
            verdicts = [r.verdict for r in client.verify_batch([m.qr_text for m in marks[:4]]).results]
        assert verdicts == [pb.VERDICT_VALID, pb.VERDICT_VEHICLE_BLOCKED, pb.VERDICT_REVOKED, pb.VERDICT_VALID]
    finally:
        again.stop(grace=1)


def test_second_server_sees_an_issue_within_a_second(db_url: str, keys_dir: Path, clock: MovableClock) -> None:
    one = start_server(db_url, keys_dir, clock)
    two = start_server(db_url, keys_dir, clock)
    try:
        with VimarkClient(f"127.0.0.1:{one.port}") as c1, VimarkClient(f"127.0.0.1:{two.port}") as c2:
            c1.upsert_vehicles([vehicle(registered_on="2026-11-02")])
            mark = c1.issue(
                request_id="r1", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            issued_at = time.monotonic()
            while c2.verify(mark.qr_text).verdict != pb.VERDICT_VALID:
                assert time.monotonic() - issued_at < 1.0, "second server did not converge within a second"
                time.sleep(0.02)
        assert one.index.checksum() == two.index.checksum()
    finally:
        one.stop(grace=1)
        two.stop(grace=1)


def test_index_built_from_scratch_matches_the_tailing_one(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> None:
    server = start_server(sqlite_url, keys_dir, clock)
    try:
        with VimarkClient(f"127.0.0.1:{server.port}") as client:
            _populate(client, 10)
        scratch = ValidityIndex()
        store = Store(sqlite_url)
        scratch.load(*store.snapshot())
        store.close()
        assert scratch.checksum() == server.index.checksum()
    finally:
        server.stop(grace=1)


def test_concurrent_writers_leave_no_change_unapplied(db_url: str, keys_dir: Path, clock: MovableClock) -> None:
    """Registry batches, status changes and issues race through two servers; each server's
    tailing index must end identical to one built from scratch (a skipped change-log row would
    leave a permanent difference)."""
    servers = [start_server(db_url, keys_dir, clock) for _ in range(2)]
    clients = [VimarkClient(f"127.0.0.1:{s.port}") for s in servers]
    plates = [f"闽C{i:05d}" for i in range(24)]

    def work(worker: int) -> None:
        client = clients[worker % 2]
        rng = random.Random(worker)
        for step in range(12):
            chosen = rng.sample(range(len(plates)), 3)
            client.upsert_vehicles(
                [vehicle(plates[i], vin=f"LSVAB2BJ5KN{i:06d}", registered_on="2026-11-02") for i in chosen]
            )
            client.set_status(plate_number=plates[chosen[0]], plate_type="02", status_codes=rng.choice("AGK"))
            client.issue(
                request_id=f"w{worker}-{step}",
                plate_number=plates[chosen[1]],
                plate_type="02",
                reason=cpb.ISSUE_REASON_REGISTRATION,
            )

    try:
        with futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(work, range(6)))
        store = Store(db_url)
        scratch = ValidityIndex()
        scratch.load(*store.snapshot())
        store.close()
        deadline = time.monotonic() + 3
        while any(s.index.checksum() != scratch.checksum() for s in servers):
            assert time.monotonic() < deadline, "a server's index differs from the store's"
            time.sleep(0.05)
        assert len(scratch) == len(plates)
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop(grace=1)
