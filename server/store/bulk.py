"""The registry's bulk feed (`ImportVehicles`): a batch of vehicles created or updated in one short
transaction, with each database's bulk statements, and the same outcome as `Writes.upsert_vehicles`
row by row.

One batch, one write transaction (the caller has parsed and checked the rows before, so the write
lock is held for the statements only):
  1. SQLite: every row is inserted as a new vehicle (`INSERT ... ON CONFLICT DO NOTHING`, one
     prepared statement stepped in C); a fresh import ends there. Rows that met a stored VIN or
     plate, and every row on PostgreSQL, are decided against the vehicles they name (`_plan`, the
     rules of `Store.upsert_vehicles`: a plate that now names another VIN starts afresh, seats 0
     and a lost exemption keep what is stored, vimark's own validity wins once it has issued),
     read in one statement (on PostgreSQL locked in id order, as Issue locks them: no deadlock);
  2. PostgreSQL: the new rows are `COPY`ed straight into `vehicles` (ids drawn from its sequence
     first); the updates are `COPY`ed into a temporary table and applied by one `UPDATE ... FROM`
     (SQLite: `executemany`);
  3. the change log, one row per changed vehicle (replicas and the index learn of bulk writes as
     of any other), by one `INSERT ... SELECT`: on SQLite `writes.log_changes` itself (the only
     writer numbers them); on PostgreSQL ids assigned as it assigns them, under the change-log
     lock, then NOTIFY.
Committed by `Database.bulk_write`: on SQLite without the WAL checkpoint inside the commit.

Rows of one batch that touch each other (a repeated VIN or plate, or two rows naming the same
stored vehicle) would make the outcome depend on their order; such a batch (rare in a registry
extract) goes through `Writes.upsert_vehicles`, which applies rows one after the other, in its own
single transaction: all or nothing either way.

Measured (2-core shared VM, SQLite file, synchronous=FULL): see docs/operations.md, "Importing the
registry", for the batch size this allows within Issue's ~100 ms budget.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vimark.client.errors import InvalidArgument, Unavailable
from vimark.server.records import VehicleRecord
from vimark.server.store import schema
from vimark.server.store.driver import Driver
from vimark.server.store.engine import CHANGES_CHANNEL, Conflict, Database
from vimark.server.store.writes import _CHANGE_LOG_LOCK, Writes, log_changes

# What a row writes, in this order (the id first when it is a new row's).
_WRITTEN = (
    "plate_type",
    "plate_number",
    "vin",
    "category",
    "registered_on",
    "seats",
    "exemption_lost",
    "status_bits",
    "valid_until",
    "current_serial",
)
_EXISTING = "id, vin, plate_type, plate_number, current_serial, valid_until, seats, exemption_lost"
_SQLITE_EXISTING = (
    f"SELECT {_EXISTING} FROM vehicles WHERE vin IN (SELECT value FROM json_each(?))"
    f" UNION SELECT {_EXISTING} FROM vehicles WHERE (plate_type, plate_number) IN"
    " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))"
)
_SQLITE_TOP = "SELECT coalesce(max(id), 0) FROM vehicles"
# No id given: SQLite numbers a new row max(id) + 1, so this batch's new rows are the ids above _SQLITE_TOP.
_SQLITE_INSERT = (
    f"INSERT INTO vehicles ({', '.join(_WRITTEN)}) VALUES ({schema.placeholders(len(_WRITTEN))}) ON CONFLICT DO NOTHING"
)
_SQLITE_NEW_VINS = "SELECT vin FROM vehicles WHERE id > ?"
_SQLITE_UPDATE = f"UPDATE vehicles SET {', '.join(f'{c} = ?' for c in _WRITTEN)} WHERE id = ?"
_PG_EXISTING = (
    f"SELECT {_EXISTING} FROM vehicles WHERE id IN ("
    " SELECT id FROM vehicles WHERE vin = ANY(%s)"
    " UNION SELECT v.id FROM vehicles v JOIN unnest(%s::text[], %s::text[]) AS p(t, n)"
    " ON v.plate_type = p.t AND v.plate_number = p.n)"
    " ORDER BY id FOR UPDATE"
)
_PG_NEXT_IDS = "SELECT nextval(pg_get_serial_sequence('vehicles', 'id')) FROM generate_series(1, %s)"
_PG_UPDATES = "CREATE TEMPORARY TABLE vimark_bulk_updates (LIKE vehicles INCLUDING DEFAULTS) ON COMMIT DROP"
_PG_APPLY_UPDATES = (
    f"UPDATE vehicles SET {', '.join(f'{c} = u.{c}' for c in _WRITTEN)} FROM vimark_bulk_updates u"
    " WHERE vehicles.id = u.id"
)
_PG_LOG = (
    "INSERT INTO change_log (vehicle_id, revoked_serial, created_at)"
    " SELECT t.id, NULL, %s FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(id, ord) ORDER BY t.ord RETURNING id"
)


@dataclass(frozen=True)
class ImportResult:
    """One batch's outcome: how many rows were new, how many updated a stored vehicle, and the
    change-log id of its last change (the index holds the batch once it has applied that id)."""

    created: int
    updated: int
    last_change_id: int


@dataclass(frozen=True)
class _Stored:
    vehicle_id: int
    vin: str
    plate: tuple[str, str]
    current_serial: int
    valid_until: int | None
    seats: int
    exemption_lost: bool


@dataclass(frozen=True)
class _Plan:
    inserts: list[tuple[Any, ...]]  # _WRITTEN values of each new row
    updates: list[tuple[int, tuple[Any, ...]]]  # (vehicle id, _WRITTEN values)


class _Entangled(Exception):
    """The batch's rows touch each other: only applying them in order gives the right outcome."""


def _new_row(driver: Driver, v: VehicleRecord) -> tuple[Any, ...]:
    """A new vehicle's _WRITTEN values: the registry's validity, no mark."""
    day, category = driver.day_out(v.registered_on), v.category.value
    values = (v.plate_type, v.plate_number, v.vin, category, day, v.seats, v.exemption_lost, v.status_bits)
    return (*values, v.valid_until, 0)


def _plan(driver: Driver, rows: Sequence[tuple[int, VehicleRecord]], stored: Sequence[_Stored]) -> _Plan:
    """Each row's write (rows: (position in the batch, vehicle)), decided from the vehicles stored
    before the batch; raises _Entangled when two rows name one stored vehicle (the outcome would
    depend on their order), and InvalidArgument (naming the first such row, as `vehicles[i].vin`)
    for a row whose VIN and plate name two vehicles."""
    by_vin = {s.vin: s for s in stored}
    by_plate = {s.plate: s for s in stored}
    matches = [(by_vin.get(v.vin), by_plate.get((v.plate_type, v.plate_number))) for _, v in rows]
    named = [{s.vehicle_id for s in pair if s is not None} for pair in matches]
    if len(set().union(*named)) < sum(map(len, named)):
        raise _Entangled
    plan = _Plan([], [])
    for (position, v), (a, b) in zip(rows, matches, strict=True):
        if a is not None and b is not None and a.vehicle_id != b.vehicle_id:
            raise InvalidArgument(
                f"vehicles[{position}].vin", f"VIN {v.vin} and plate {v.plate_number} name two vehicles"
            )
        old = a or b
        if old is None:
            plan.inserts.append(_new_row(driver, v))
            continue
        serial, seats, exemption_lost, valid_until = old.current_serial, v.seats, v.exemption_lost, v.valid_until
        if old.vin != v.vin:
            serial = 0  # the plate was reissued to another vehicle: it starts afresh
        else:  # the same vehicle: as Writes.upsert_vehicles keeps them
            seats, exemption_lost = v.seats or old.seats, v.exemption_lost or bool(old.exemption_lost)
            valid_until = old.valid_until if serial else v.valid_until
        values = (v.plate_type, v.plate_number, v.vin, v.category.value, driver.day_out(v.registered_on), seats)
        plan.updates.append((old.vehicle_id, (*values, exemption_lost, v.status_bits, valid_until, serial)))
    return plan


class Bulk:
    def __init__(self, db: Database, writes: Writes) -> None:
        self._db = db
        self._driver = db.driver
        self._writes = writes

    def import_vehicles(self, vehicles: Sequence[VehicleRecord]) -> ImportResult:
        if not vehicles:
            raise InvalidArgument("vehicles", "an empty batch")
        # A VIN or plate twice in one batch: the second row updates what the first wrote.
        repeated = len({v.vin for v in vehicles}) < len(vehicles) or len(
            {(v.plate_type, v.plate_number) for v in vehicles}
        ) < len(vehicles)
        if not repeated:
            for _ in range(3):
                try:
                    bulk = self._import_sqlite if self._driver.is_sqlite else self._import_postgres
                    return bulk(vehicles)
                except _Entangled:
                    break
                # PostgreSQL: a deadlock, or a concurrent writer inserted one of these vehicles first
                except (Conflict, self._driver.IntegrityError):
                    continue
            else:
                raise Unavailable("concurrent registry updates kept colliding on the same vehicles; retry")
        created, updated = self._writes.upsert_vehicles(vehicles)  # row after row, in one transaction
        return ImportResult(created, updated, 0)  # 0: the caller catches up on the whole log

    def _import_sqlite(self, vehicles: Sequence[VehicleRecord]) -> ImportResult:
        driver = self._driver
        rows = [_new_row(driver, v) for v in vehicles]  # before the write lock is taken
        with self._db.bulk_write() as c:  # BEGIN IMMEDIATE: the only writer to commit
            top = c.execute(_SQLITE_TOP).fetchone()[0]
            c.executemany(_SQLITE_INSERT, rows)
            created = c.rowcount
            changed = list(range(top + 1, top + 1 + created))
            updates: list[tuple[int, tuple[Any, ...]]] = []
            if created < len(vehicles):  # some met a stored VIN or plate: decide those
                new = {r[0] for r in c.execute(_SQLITE_NEW_VINS, (top,))}
                rest = [(i, v) for i, v in enumerate(vehicles) if v.vin not in new]
                c.execute(
                    _SQLITE_EXISTING,
                    (
                        json.dumps([v.vin for _, v in rest]),
                        json.dumps([(v.plate_type, v.plate_number) for _, v in rest], ensure_ascii=False),
                    ),
                )
                updates = _plan(driver, rest, _stored(c.fetchall())).updates
                c.executemany(_SQLITE_UPDATE, [(*row, i) for i, row in updates])
                changed += [i for i, _ in updates]
            change_ids = log_changes(driver, c, changed)
        return ImportResult(created, len(updates), change_ids[-1] if change_ids else 0)

    def _import_postgres(self, vehicles: Sequence[VehicleRecord]) -> ImportResult:
        with self._db.driver_cursor(write=True) as c:
            plates = ([v.plate_type for v in vehicles], [v.plate_number for v in vehicles])
            c.execute(_PG_EXISTING, ([v.vin for v in vehicles], *plates))
            plan = _plan(self._driver, list(enumerate(vehicles)), _stored(c.fetchall()))
            new_ids: list[int] = []
            if plan.inserts:
                c.execute(_PG_NEXT_IDS, (len(plan.inserts),))
                new_ids = [r[0] for r in c.fetchall()]
                with c.copy(f"COPY vehicles (id, {', '.join(_WRITTEN)}) FROM STDIN") as copy:
                    for i, row in zip(new_ids, plan.inserts, strict=True):
                        copy.write_row((i, *row))
            if plan.updates:
                c.execute(_PG_UPDATES)
                with c.copy(f"COPY vimark_bulk_updates (id, {', '.join(_WRITTEN)}) FROM STDIN") as copy:
                    for i, row in plan.updates:
                        copy.write_row((i, *row))
                c.execute(_PG_APPLY_UPDATES)
            # The change log, its ids assigned under the change-log lock to commit (writes.log_changes).
            c.execute("SELECT pg_advisory_xact_lock(%s)", (_CHANGE_LOG_LOCK,))
            c.execute(_PG_LOG, (_now(), new_ids + [i for i, _ in plan.updates]))
            last = int(max(r[0] for r in c.fetchall()))
            if self._driver.notify_changes:  # replicas LISTENing wake at once (delivered at commit)
                c.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, str(last)))
        return ImportResult(len(plan.inserts), len(plan.updates), last)


def _stored(rows: Sequence[Any]) -> list[_Stored]:
    return [_Stored(r[0], r[1], (r[2], r[3]), r[4], r[5], r[6], bool(r[7])) for r in rows]


def _now() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp())
