"""Reads for police terminals' status snapshot (server/terminal_status.py builds it): in one
consistent transaction, the change id, each covered mark's class (current, superseded or
unknown vehicle) by an SQL join of the marks with the vehicles holding their signed plates,
streamed into arrays, the hotlist and every revoked serial.

A mark's signed plate and VIN are columns kept at issue (migration 0005). Rows from before have
'' there: their QR text is read (`signed_plate`, the caller's decoder) and their plates looked up
in batches, in the same transaction: a slow path for old rows only."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, func, select, tuple_

from vimark.client.domain import Month
from vimark.server.store.engine import Database
from vimark.server.store.schema import ChangeRow, MarkRow, VehicleRow

# A mark's class in StatusFacts.classes.
SUPERSEDED = 1  # not the current mark of the vehicle holding its signed plate (or revoked, or unreadable)
UNKNOWN_VEHICLE = 0  # no vehicle holds its signed plate now
CURRENT = 2  # the current mark of the vehicle holding its signed plate, with its VIN, not revoked
_LEGACY = -1  # no signed plate stored: read from the QR text
_CHUNK = 100_000  # rows fetched at a time (bounded memory between the driver and the arrays)

# What a mark's QR text signs: (plate type, plate number, VIN), or None when it cannot be read.
SignedPlate = Callable[[str], "tuple[str, str, str] | None"]


@dataclass(frozen=True)
class StatusFacts:
    """What a status snapshot is made of, as the store holds it at `change_id`."""

    change_id: int
    first_serial: int  # the lowest serial within validity at `from_month`, or current; 0 if none
    serials: npt.NDArray[np.int64]  # every mark row from first_serial up, ascending
    classes: npt.NDArray[np.int8]  # CURRENT, SUPERSEDED or UNKNOWN_VEHICLE, aligned with serials
    revoked: frozenset[int]
    hotlist: dict[tuple[str, str], int]  # (plate type, plate number) -> status bits, for `hot_mask`


class TerminalReads:
    def __init__(self, db: Database) -> None:
        self._db = db

    def status_facts(self, from_month: Month, hot_mask: int, signed_plate: SignedPlate) -> StatusFacts:
        with self._db.read(consistent=True) as conn:
            if not self._db.is_sqlite:
                # The join's cost estimate turns PostgreSQL's JIT on, which compiled for longer
                # than the query ran (3 s of 5 at 150,000 marks): a plain scan needs none.
                conn.exec_driver_sql("SET LOCAL jit = off")
            change_id = conn.execute(select(func.coalesce(func.max(ChangeRow.id), 0))).scalar_one()
            lowest_valid = conn.execute(
                select(func.min(MarkRow.serial)).where(MarkRow.valid_until >= from_month)
            ).scalar_one()
            lowest_current = conn.execute(
                select(func.min(VehicleRow.current_serial)).where(VehicleRow.current_serial > 0)
            ).scalar_one()
            first = min((s for s in (lowest_valid, lowest_current) if s), default=0)
            serials, classes = _classes(conn, first, signed_plate) if first else (_EMPTY_SERIALS, _EMPTY_CLASSES)
            hot = select(VehicleRow.plate_type, VehicleRow.plate_number, VehicleRow.status_bits).where(
                VehicleRow.status_bits.op("&")(hot_mask) != 0
            )
            hotlist = {(t, n): int(b) for t, n, b in conn.execute(hot)}
            revoked = frozenset(int(s) for s in conn.execute(select(MarkRow.serial).where(MarkRow.revoked)).scalars())
        return StatusFacts(int(change_id), int(first), serials, classes, revoked, hotlist)


_EMPTY_SERIALS = np.zeros(0, np.int64)
_EMPTY_CLASSES = np.zeros(0, np.int8)


# Each covered mark's class. Most marks' vehicle (by vehicle_id, an integer key) still holds the
# plate the mark signs and is judged at once; only the others look the plate up (a unique index),
# so the join costs little more than reading the marks. {first}: an int from this module's read.
_CLASSES = f"""
SELECT m.serial,
  CASE WHEN m.signed_plate_number = '' THEN {_LEGACY}
    WHEN o.plate_number = m.signed_plate_number AND o.plate_type = m.signed_plate_type THEN
      CASE WHEN o.current_serial = m.serial AND o.vin = m.signed_vin AND NOT m.revoked THEN {CURRENT}
        ELSE {SUPERSEDED} END
    ELSE coalesce((
      SELECT CASE WHEN v.current_serial = m.serial AND v.vin = m.signed_vin AND NOT m.revoked THEN {CURRENT}
        ELSE {SUPERSEDED} END
      FROM vehicles v WHERE v.plate_type = m.signed_plate_type AND v.plate_number = m.signed_plate_number
    ), {UNKNOWN_VEHICLE}) END,
  CASE WHEN m.signed_plate_number = '' THEN m.qr_text END,
  m.revoked
FROM marks m JOIN vehicles o ON o.id = m.vehicle_id
WHERE m.serial >= {{first}} ORDER BY m.serial
"""


def _classes(
    conn: Connection, first: int, signed_plate: SignedPlate
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    serial_parts: list[npt.NDArray[np.int64]] = []
    class_parts: list[npt.NDArray[np.int8]] = []
    legacy_rows: list[tuple[int, int, str, bool]] = []  # (position, serial, QR text, revoked)
    at = 0
    # The driver's rows as they come (no per-row processing), a server-side cursor on PostgreSQL.
    result = conn.execution_options(stream_results=True).exec_driver_sql(_CLASSES.format(first=int(first)))
    while rows := result.fetchmany(_CHUNK):
        serial_parts.append(np.fromiter((r[0] for r in rows), np.int64, len(rows)))
        part = np.fromiter((r[1] for r in rows), np.int8, len(rows))
        class_parts.append(part)
        for i in np.flatnonzero(part == _LEGACY):
            r = rows[int(i)]
            legacy_rows.append((at + int(i), int(r[0]), str(r[2]), bool(r[3])))
        at += len(rows)
    serials = np.concatenate(serial_parts) if serial_parts else _EMPTY_SERIALS
    classes = np.concatenate(class_parts) if class_parts else _EMPTY_CLASSES
    for start in range(0, len(legacy_rows), 500):
        batch = legacy_rows[start : start + 500]
        for (position, _, _, _), k in zip(batch, _legacy_classes(conn, batch, signed_plate), strict=True):
            classes[position] = k
    return serials, classes


def _legacy_classes(
    conn: Connection, rows: Sequence[tuple[int, int, str, bool]], signed_plate: SignedPlate
) -> Iterable[int]:
    """The classes of marks stored without their signed plate: read from their QR text."""
    signed = [signed_plate(text) for _, _, text, _ in rows]
    plates = {(s[0], s[1]) for s in signed if s is not None}
    holders: dict[tuple[str, str], tuple[str, int]] = {}
    if plates:
        query = select(VehicleRow.plate_type, VehicleRow.plate_number, VehicleRow.vin, VehicleRow.current_serial)
        for t, n, vin, current in conn.execute(
            query.where(tuple_(VehicleRow.plate_type, VehicleRow.plate_number).in_(sorted(plates)))
        ):
            holders[(t, n)] = (vin, int(current))
    for (_, serial, _, revoked), s in zip(rows, signed, strict=True):
        if s is None:  # unreadable even here (a seal key gone): never current
            yield SUPERSEDED
            continue
        holder = holders.get((s[0], s[1]))
        if holder is None:
            yield UNKNOWN_VEHICLE
        elif holder == (s[2], serial) and not revoked:
            yield CURRENT
        else:
            yield SUPERSEDED
