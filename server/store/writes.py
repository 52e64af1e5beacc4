"""Writes: the registry's vehicles, statuses, revocations and the audit log; and the change-log
writer every write ends with, Issue's too (issuance.py).

Every write commits its rows and its change-log rows in one transaction: `log_changes` is the
last statement of each. Change-log ids are assigned in commit order (SQLite serialises writers;
on PostgreSQL an advisory lock is taken just before the change-log insert and held to commit), so
a reader that tails `id > last` never skips a row that commits later. On PostgreSQL the same
transaction NOTIFYs `vimark_changes` (delivered at commit), so replicas tail at once
(`engine.ChangeListener`); polling stays the fallback.

Lock order, so writers cannot deadlock one another: vehicle and mark rows first, the change-log
lock last. The audit log has a lock of its own (the SQLite writer lock; an advisory lock on
PostgreSQL), taken first and alone by the audit writes: its events are chained in id order
(audit_chain.py), so each append reads the chain's head and writes after it under that lock.

The change-log rows and the audit rows go to the driver directly (driver.py says why); the rest
is SQLAlchemy Core.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from vimark.client.errors import InvalidArgument, NotFound, Unavailable, VimarkError
from vimark.server.records import AuditEvent, VehicleRecord
from vimark.server.store import audit_chain, mapping, schema
from vimark.server.store.driver import Driver, cursor_in
from vimark.server.store.engine import CHANGES_CHANNEL, Conflict, Database
from vimark.server.store.schema import VEHICLE_READ, AuditAnchorRow, AuditRow, MarkRow, VehicleRow

_CHANGE_LOG_LOCK = 0x76696D61  # "vima": the advisory lock that orders change-log ids on PostgreSQL
_AUDIT_CHAIN_LOCK = 0x76696D63  # "vimc": the advisory lock that orders audit ids, and their chain, on PostgreSQL


def log_changes(driver: Driver, c: Any, vehicle_ids: Sequence[int], revoked_serial: int | None = None) -> list[int]:
    """The last statement of every write, on its transaction's driver cursor `c`: take the
    change-log lock, then append one row per vehicle. Returns their ids, in the order of `vehicle_ids`."""
    if not vehicle_ids:
        return []
    now = int(dt.datetime.now(dt.UTC).timestamp())
    if driver.is_sqlite:  # the only writer (BEGIN IMMEDIATE): the next ids are ours, and in commit order
        c.execute(schema.LAST_CHANGE_ID)
        first = c.fetchone()[0] + 1
        # One statement for the whole run (a bulk batch logs thousands): the ids as json_each numbers them.
        c.execute(schema.INSERT_CHANGES_SQLITE, (first, revoked_serial, now, json.dumps(list(vehicle_ids))))
        return list(range(first, first + len(vehicle_ids)))
    values = [{"vehicle_id": v, "revoked_serial": revoked_serial, "created_at": now} for v in vehicle_ids]
    # Ids assigned while holding the change-log lock, to commit: commit order (module docstring).
    c.execute("SELECT pg_advisory_xact_lock(%s)", [_CHANGE_LOG_LOCK])
    c.executemany(
        driver.sql(schema.INSERT_CHANGE_RETURNING),
        [mapping.row(schema.CHANGE_COLUMNS_BUT_ID, v) for v in values],
        returning=True,
    )
    ids = []
    while True:  # one result per row, in the order of the rows
        ids.append(c.fetchone()[0])
        if not c.nextset():
            break
    if driver.notify_changes:
        # Replicas LISTENing (engine.ChangeListener) wake at once instead of at their next poll.
        # PostgreSQL delivers it at commit and only then: no replica hears of an uncommitted change.
        c.execute("SELECT pg_notify(%s, %s)", [CHANGES_CHANNEL, str(max(ids))])
    return ids


class Writes:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._driver = db.driver

    # -- registry ----------------------------------------------------------------------------
    def upsert_vehicles(self, vehicles: Sequence[VehicleRecord]) -> tuple[int, int]:
        for _ in range(3):
            try:
                return self._upsert_vehicles(vehicles)
            except (IntegrityError, Conflict):
                # A concurrent batch inserted one of these vehicles first, or the two batches met
                # as new rows in opposite orders: run again (existing rows are locked in id order).
                continue
        raise Unavailable("concurrent registry updates kept colliding on the same vehicles; retry")

    def _upsert_vehicles(self, vehicles: Sequence[VehicleRecord]) -> tuple[int, int]:
        created = updated = 0
        changed: list[int] = []
        is_sqlite = self._driver.is_sqlite
        with self._db.write() as conn:
            if not is_sqlite:  # lock the batch's existing rows in one order: batches never deadlock
                plates = [(v.plate_type, v.plate_number) for v in vehicles]
                conn.execute(
                    select(VehicleRow.id)
                    .where(
                        VehicleRow.vin.in_([v.vin for v in vehicles])
                        | tuple_(VehicleRow.plate_type, VehicleRow.plate_number).in_(plates)
                    )
                    .order_by(VehicleRow.id)
                    .with_for_update()
                )
            for position, v in enumerate(vehicles):
                query = select(
                    VehicleRow.id,
                    VehicleRow.vin,
                    VehicleRow.current_serial,
                    VehicleRow.valid_until,
                    VehicleRow.seats,
                    VehicleRow.exemption_lost,
                ).where(
                    (VehicleRow.vin == v.vin)
                    | ((VehicleRow.plate_type == v.plate_type) & (VehicleRow.plate_number == v.plate_number))
                )
                # Locked (again, or for the first time if a concurrent batch created it after the lock
                # above), so a concurrent Issue's new serial and validity are read, not overwritten.
                existing = conn.execute(query if is_sqlite else query.with_for_update()).all()
                if len(existing) > 1:
                    raise InvalidArgument(
                        f"vehicles[{position}].vin", f"VIN {v.vin} and plate {v.plate_number} name two vehicles"
                    )
                values: dict[str, object] = {
                    "plate_type": v.plate_type,
                    "plate_number": v.plate_number,
                    "vin": v.vin,
                    "category": v.category.value,
                    "registered_on": v.registered_on,
                    "seats": v.seats,
                    "exemption_lost": v.exemption_lost,
                    "status_bits": v.status_bits,
                }
                if existing:
                    vehicle_id, vin, serial, valid_until, seats, exemption_lost = existing[0]
                    if vin != v.vin:
                        serial = 0
                    else:
                        # The same vehicle: seats 0 means "not given", and a lost exemption stays lost
                        # (each reason is a fact of its past), so a feed that lacks them clears neither.
                        values.update(seats=v.seats or seats, exemption_lost=v.exemption_lost or exemption_lost)
                    values.update(valid_until=valid_until if serial else v.valid_until, current_serial=serial)
                    conn.execute(update(VehicleRow).where(VehicleRow.id == vehicle_id).values(**values))
                    updated += 1
                else:
                    values.update(valid_until=v.valid_until, current_serial=0)
                    vehicle_id = conn.execute(insert(VehicleRow).values(**values).returning(VehicleRow.id)).scalar_one()
                    created += 1
                changed.append(vehicle_id)
            with cursor_in(conn) as c:
                log_changes(self._driver, c, changed)
        return created, updated

    def set_status(self, plate_type: str, plate_number: str, status_bits: int) -> VehicleRecord:
        with self._db.write() as conn:
            query = select(*VEHICLE_READ).where(
                VehicleRow.plate_type == plate_type, VehicleRow.plate_number == plate_number
            )
            row = conn.execute(query if self._driver.is_sqlite else query.with_for_update()).first()
            if row is None:
                raise NotFound(f"no vehicle {plate_number} with plate type {plate_type}")
            vehicle = mapping.vehicle(row)
            conn.execute(update(VehicleRow).where(VehicleRow.id == vehicle.vehicle_id).values(status_bits=status_bits))
            with cursor_in(conn) as c:
                log_changes(self._driver, c, [vehicle.vehicle_id])
        return replace(vehicle, status_bits=status_bits)

    def revoke_mark(self, serial: int, reason: str) -> None:
        with self._db.write() as conn:
            vehicle_id = conn.execute(select(MarkRow.vehicle_id).where(MarkRow.serial == serial)).scalar()
            if vehicle_id is None:
                raise NotFound(f"no mark with serial {serial}")
            conn.execute(
                update(MarkRow).where(MarkRow.serial == serial).values(revoked=True, revoked_reason=reason[:200])
            )
            with cursor_in(conn) as c:
                log_changes(self._driver, c, [vehicle_id], revoked_serial=serial)

    # -- audit log ---------------------------------------------------------------------------
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Write a batch in one transaction, each event chained to the one before it in id order
        (audit_chain.py): the chain's head is read, and the ids assigned, under the audit lock."""
        if not events:
            return
        driver = self._driver
        contents = mapping.audit_contents(events)
        try:
            with self._db.driver_cursor(write=True) as c:
                last_id, prev = _audit_head(driver, c)
                rows = [
                    (*content, chain)
                    for content, chain in zip(contents, audit_chain.links(prev, contents), strict=True)
                ]
                if driver.is_sqlite:  # the only writer: ids after the last ever given, pruned or not
                    c.executemany(
                        schema.INSERT_AUDIT_WITH_ID, [(last_id + k, *row) for k, row in enumerate(rows, start=1)]
                    )
                else:  # the sequence, under the audit lock: ids in chain order
                    c.executemany(driver.sql(schema.INSERT_AUDIT), rows)
        except driver.DatabaseError as exc:  # anything but OperationalError, which the guard made Unavailable
            raise VimarkError(f"audit events refused by the database: {exc}", reason="AUDIT_WRITE_FAILED") from exc

    def prune_audit(self, before: dt.datetime, through_id: int) -> int:
        """Delete the oldest events, in one transaction: those with id <= through_id and a time
        before `before`, from the oldest on, stopping at the first event that is not before
        `before` (events are stored in id order, but their times may step back a little: a
        buffered event is written after newer ones), so what remains is one unbroken chain from
        the anchor. The anchor moves to the last event deleted. Returns how many were deleted."""
        if before.tzinfo is None:
            raise InvalidArgument("before", "needs a time zone (a naive datetime is ambiguous)")
        with self._db.write() as conn:
            if not self._driver.is_sqlite:  # SQLite: the writer lock is held already
                conn.execute(select(func.pg_advisory_xact_lock(_AUDIT_CHAIN_LOCK)))
            kept = conn.execute(
                select(func.min(AuditRow.id)).where(AuditRow.id <= through_id, AuditRow.at >= before.timestamp())
            ).scalar()
            last = through_id if kept is None else min(through_id, kept - 1)
            tail = conn.execute(
                select(AuditRow.id, AuditRow.chain).where(AuditRow.id <= last).order_by(AuditRow.id.desc()).limit(1)
            ).first()
            if tail is None:
                return 0
            deleted = conn.execute(delete(AuditRow).where(AuditRow.id <= last)).rowcount
            anchor = conn.execute(select(AuditAnchorRow.event_id).where(AuditAnchorRow.id == 1)).scalar()
            if anchor is None:
                conn.execute(insert(AuditAnchorRow).values(id=1, event_id=tail.id, chain=tail.chain))
            elif tail.id > anchor:
                conn.execute(
                    update(AuditAnchorRow).where(AuditAnchorRow.id == 1).values(event_id=tail.id, chain=tail.chain)
                )
        return int(deleted)


def _audit_head(driver: Driver, c: Any) -> tuple[int, str]:
    """The audit chain's head, under the audit lock (taken here on PostgreSQL, held to commit; on
    SQLite the writer lock is held already): the last event's id and chain; if none, the
    anchor's (every event was pruned); if none, nothing was ever written."""
    if not driver.is_sqlite:
        c.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_CHAIN_LOCK])
    for statement in (schema.LAST_AUDIT, schema.AUDIT_ANCHOR):
        c.execute(statement)
        row = c.fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
    return 0, audit_chain.GENESIS
