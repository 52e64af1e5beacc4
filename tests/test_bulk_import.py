"""The bulk registry feed: `ImportVehicles` (a stream of batches, each all or nothing), the store's
bulk path (`Store.import_vehicles`) and `vimark vehicles import` on top of them.

On SQLite and PostgreSQL (skipped, with the reason, when PostgreSQL is unreachable)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import MovableClock, start_server, vehicle
from tls_fixtures import Connect
from vimark.client.cli import vehicles as cli_vehicles
from vimark.client.cli.progress import Progress
from vimark.client.errors import InvalidArgument, PermissionDenied
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.cli.main import main
from vimark.server.policy import Role
from vimark.server.records import VehicleRecord
from vimark.server.registry import parse_vehicle
from vimark.server.store import Store
from vimark.v1 import registry_service_pb2 as rpb

HEADER = "plate_number,plate_type,vin,category,registered_on,valid_until,status,seats"


def car(n: int, **changes: object) -> rpb.Vehicle:
    """Vehicle n: its own plate and VIN."""
    lost = bool(changes.pop("exemption_lost", False))
    fields: dict[str, object] = {"plate_number": f"闽C{n:05d}", "vin": f"LSVAB2BJ5KN{n:06d}"}
    v = vehicle(**{**fields, **changes})  # type: ignore[arg-type]
    v.exemption_lost = lost
    return v


def stored(store: Store) -> dict[str, VehicleRecord]:
    """Every stored vehicle by VIN, without its id (ids are the database's to number)."""
    return {v.vin: dataclasses.replace(v, vehicle_id=0) for v in store.snapshot()[1]}


# -- the store: the same outcome as upsert_vehicles, in bulk ------------------------------------


def feed() -> list[list[rpb.Vehicle]]:
    """Batches that exercise every rule of an update (see Store.upsert_vehicles)."""
    return [
        [car(n, seats=5, valid_until="2027-03") for n in range(1, 9)],
        [
            car(1, status_codes="C", seats=0),  # same VIN: seats 0 keeps 5
            car(2, exemption_lost=True),
            car(3, plate_number="闽C99999"),  # same VIN, new plate
            car(4, vin="LSVAB2BJ5KN999999", seats=7),  # the plate reissued to another vehicle: afresh
            car(5, valid_until="2026-12"),  # has a mark (below): vimark's validity stays
            car(20),  # new
        ],
        [car(2, exemption_lost=False), car(21), car(22, plate_type="52", plate_number="粤BD12345")],
        [car(6, status_codes="K"), car(6, status_codes="G")],  # one VIN twice: row after row
        [car(7, plate_number="闽C00008"), car(8, plate_number="闽C00007")],  # two plates swapped: entangled
    ]


def apply(store: Store, batches: Sequence[Sequence[rpb.Vehicle]], bulk: bool) -> list[tuple[int, int] | str]:
    outcomes: list[tuple[int, int] | str] = []
    for n, batch in enumerate(batches):
        records = [parse_vehicle(v, f"vehicles[{i}]") for i, v in enumerate(batch)]
        try:
            if bulk:
                result = store.import_vehicles(records)
                outcomes.append((result.created, result.updated))
            else:
                outcomes.append(store.upsert_vehicles(records))
        except Exception as exc:  # the same refusal, whichever path
            outcomes.append(f"{type(exc).__name__}")
        if n == 0:  # vehicle 5 gets a mark before the next batch
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE vehicles SET current_serial = 77 WHERE vin = 'LSVAB2BJ5KN000005'"))
    return outcomes


def test_bulk_path_ends_as_upsert_vehicles_does(db_url: str, tmp_path: Path) -> None:
    bulk, reference = Store(db_url), Store(f"sqlite:///{tmp_path / 'reference.db'}")
    try:
        assert apply(bulk, feed(), bulk=True) == apply(reference, feed(), bulk=False)
        got, want = stored(bulk), stored(reference)
        assert got == want
        # The rules, spelled out for a few rows (so a shared mistake cannot pass):
        assert got["LSVAB2BJ5KN000001"].seats == 5 and got["LSVAB2BJ5KN000001"].status_bits != 0
        assert got["LSVAB2BJ5KN000002"].exemption_lost  # lost stays lost
        assert "LSVAB2BJ5KN000004" not in got and got["LSVAB2BJ5KN999999"].plate_number == "闽C00004"
        assert got["LSVAB2BJ5KN000005"].current_serial == 77
        assert got["LSVAB2BJ5KN000005"].valid_until == want["LSVAB2BJ5KN000005"].valid_until
    finally:
        bulk.close()
        reference.close()


def test_every_changed_vehicle_gets_one_change_log_row(db_url: str) -> None:
    store = Store(db_url)
    try:
        first = store.import_vehicles([parse_vehicle(car(n)) for n in range(1, 6)])
        second = store.import_vehicles([parse_vehicle(car(n, status_codes="C")) for n in (2, 4, 9)])
        assert (first.created, first.updated, second.created, second.updated) == (5, 0, 1, 2)
        changes = store.changes_since(0)
        assert [c.change_id for c in changes] == list(range(changes[0].change_id, second.last_change_id + 1))
        assert changes[4].change_id == first.last_change_id
        assert sorted(c.vehicle.vin[-1] for c in changes[5:]) == ["2", "4", "9"]
    finally:
        store.close()


def test_a_row_naming_two_vehicles_refuses_its_batch(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.import_vehicles([parse_vehicle(car(n)) for n in (1, 2)])
        before = stored(store)
        with pytest.raises(InvalidArgument) as caught:
            store.import_vehicles([parse_vehicle(car(3)), parse_vehicle(car(1, plate_number="闽C00002"))])
        assert caught.value.field == "vehicles[1].vin"
        assert stored(store) == before  # vehicle 3 (the row before it) is not in either
    finally:
        store.close()


# -- the stream ---------------------------------------------------------------------------------


def test_refused_batch_is_named_and_nothing_of_it_applied(server: VimarkServer, client: VimarkClient) -> None:
    good = [car(1), car(2)]
    bad = [car(3), car(4, registered_on="2022-02-30"), car(5)]
    acks: list[rpb.ImportVehiclesResponse] = []
    with pytest.raises(InvalidArgument) as caught:
        acks.extend(client.import_vehicles([good, bad, [car(6)]], window=1))
    assert caught.value.field == "vehicles[1].registered_on"
    assert [(a.sequence, a.created_count, a.updated_count) for a in acks] == [(1, 2, 0)]
    assert sorted(v[-1] for v in stored(server.store)) == ["1", "2"]  # batch 1 stays; 2 and 3 are not in
    # Acknowledged means in the index too: a lookup sees it at once.
    assert client.lookup(plate_number="闽C00002", plate_type="02").plate_number == "闽C00002"


def test_counts_per_batch_and_a_full_window(server: VimarkServer, client: VimarkClient) -> None:
    batches = [[car(n) for n in range(k * 10, k * 10 + 10)] for k in range(1, 7)]
    batches.append([car(n, status_codes="C") for n in range(10, 15)] + [car(99)])
    acks = list(client.import_vehicles(batches, window=2))
    assert [a.sequence for a in acks] == list(range(1, 8))
    assert [(a.created_count, a.updated_count) for a in acks] == [(10, 0)] * 6 + [(1, 5)]
    assert len(stored(server.store)) == 61


def test_only_operators_may_import(connect: Connect) -> None:
    with pytest.raises(PermissionDenied):
        list(connect(Role.STATION).import_vehicles([[car(1)]]))
    assert [a.created_count for a in connect(Role.OPERATOR).import_vehicles([[car(1)]])] == [1]


def test_an_oversize_batch_is_refused(server: VimarkServer, client: VimarkClient) -> None:
    with pytest.raises(InvalidArgument) as caught:
        list(client.import_vehicles([[car(n) for n in range(10_001)]]))
    assert caught.value.field == "vehicles" and "send 1 to 10000" in caught.value.description


# -- the command --------------------------------------------------------------------------------


@pytest.fixture
def served(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> Iterator[VimarkServer]:
    server = start_server(sqlite_url, keys_dir, clock)
    yield server
    server.stop(grace=1)


def csv_file(tmp_path: Path, rows: Sequence[str]) -> Path:
    path = tmp_path / "vehicles.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def row(n: int, registered_on: str = "2022-06-15", seats: str = "5") -> str:
    return f"闽C{n:05d},02,LSVAB2BJ5KN{n:06d},small_passenger,{registered_on},,,{seats}"


def test_cli_names_the_line_and_the_batch_not_applied(
    served: VimarkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Batches of 3: lines 2-4, 5-7, 8-10, 11. Line 9 is bad: lines 8-10 are refused, 2-7 stay.
    monkeypatch.setattr(cli_vehicles, "BATCH", 3)
    rows = [row(n) for n in range(1, 11)]
    rows[7] = row(8, seats="100")
    path = csv_file(tmp_path, rows)
    assert main(["vehicles", "import", str(path), "--server", f"127.0.0.1:{served.port}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vimark: seats: {path} line 9: 100 seats is not a motor vehicle vimark marks (at most 99);"
        " the batch of lines 8-10 was not applied, the 6 rows before it were"
        " (lines 2-7 were imported; line 8 onward were not) [INVALID_FIELD]"
    ]
    assert sorted(int(v[-2:]) for v in stored(served.store)) == [1, 2, 3, 4, 5, 6]
    # Fixed, the whole file again: the six are updated, the rest created.
    path.write_text("\n".join([HEADER, *(row(n) for n in range(1, 11))]) + "\n", encoding="utf-8")
    assert main(["vehicles", "import", str(path), "--server", f"127.0.0.1:{served.port}"]) == 0
    assert capsys.readouterr().out.startswith("imported 10 vehicles: 4 new, 6 updated (")


def test_cli_progress_is_plain_lines_when_not_a_terminal(
    served: VimarkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_vehicles, "BATCH", 4)
    monkeypatch.setattr(cli_vehicles, "Progress", functools.partial(Progress, every=0))  # a line per batch
    path = csv_file(tmp_path, [row(n) for n in range(1, 11)])
    assert main(["vehicles", "import", str(path), "--server", f"127.0.0.1:{served.port}"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "\r" not in captured.err and "\x1b" not in captured.err  # no redrawing: a log stays readable
    assert [line.split("  ")[0] for line in lines[:3]] == [
        "importing vehicles.csv 4/10 vehicles (40%)",
        "importing vehicles.csv 8/10 vehicles (80%)",
        "importing vehicles.csv 10/10 vehicles (100%)",
    ]
    assert all(line.endswith(" left") and "/s" in line for line in lines[:3])
    assert lines[3].startswith("importing vehicles.csv 10 vehicles in ")
    assert captured.out.startswith("imported 10 vehicles: 10 new, 0 updated (")
