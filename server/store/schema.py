"""The tables, each column defined once here, and everything else derived from them: the columns
each record is read from (`VEHICLE_READ`, `MARK_READ`, `AUDIT_READ`) and the statements of the
driver path (`driver.py`), rendered from those columns in qmark style.

Migrations (`server/migrations`) are compared against `Base.metadata` by the tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vimark.server.records import AuditEvent, MarkRecord, VehicleRecord

# An integer primary key that is SQLite's rowid (auto-assigned) and a bigint elsewhere.
_Id = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class VehicleRow(Base):
    __tablename__ = "vehicles"
    __table_args__ = (UniqueConstraint("plate_type", "plate_number", name="uq_vehicles_plate"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    plate_type: Mapped[str] = mapped_column(String(2))
    plate_number: Mapped[str] = mapped_column(String(16))
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    category: Mapped[str] = mapped_column(String(24))
    registered_on: Mapped[dt.date] = mapped_column(Date)
    seats: Mapped[int] = mapped_column(Integer, default=0)
    exemption_lost: Mapped[bool] = mapped_column(Boolean, default=False)
    status_bits: Mapped[int] = mapped_column(Integer, default=0)
    valid_until: Mapped[int | None] = mapped_column(Integer, nullable=True)  # Month
    current_serial: Mapped[int] = mapped_column(BigInteger, default=0)


class MarkRow(Base):
    __tablename__ = "marks"

    serial: Mapped[int] = mapped_column(_Id, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    vehicle_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("vehicles.id"), index=True)
    valid_until: Mapped[int] = mapped_column(Integer)
    reason: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[int] = mapped_column(BigInteger)  # Unix seconds
    valid_from: Mapped[dt.date] = mapped_column(Date)
    inspected_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    station_id: Mapped[str] = mapped_column(String(32), default="")
    key_id: Mapped[int] = mapped_column(Integer)
    qr_text: Mapped[str] = mapped_column(Text)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_reason: Mapped[str] = mapped_column(String(200), default="")


class ChangeRow(Base):
    __tablename__ = "change_log"
    __table_args__ = (Index("ix_change_log_vehicle", "vehicle_id"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("vehicles.id"))
    revoked_serial: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)  # Unix seconds


class AuditRow(Base):
    """One audited call: who asked (caller, role, rpc), when, about which plate, and the answer."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_plate_at", "plate_number", "at"),
        Index("ix_audit_events_caller_at", "caller_id", "at"),
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    at: Mapped[float] = mapped_column(Double)  # Unix seconds, sub-second precision
    caller_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    rpc: Mapped[str] = mapped_column(String(32))
    plate_type: Mapped[str] = mapped_column(String(8))
    plate_number: Mapped[str] = mapped_column(String(32))  # empty when the QR was not authentic
    verdict: Mapped[str] = mapped_column(String(32))  # a Verdict name, or FOUND / NOT_FOUND for a lookup
    serial: Mapped[int] = mapped_column(BigInteger)  # 0 = no mark identified


VEHICLES: Table = Base.metadata.tables["vehicles"]
MARKS: Table = Base.metadata.tables["marks"]
CHANGES: Table = Base.metadata.tables["change_log"]
AUDIT: Table = Base.metadata.tables["audit_events"]


# -- what each record is read from ------------------------------------------------------------
def _read(
    record: type[Any], table: Table, renamed: dict[str, str], joined: Table | None = None
) -> tuple[Column[Any], ...]:
    """The columns `record` is read from, in the order of its fields (so mapping.py builds it by
    position): each field names a column of `table` (`renamed` maps a field to another column
    name), else of `joined`."""
    columns = []
    for f in dataclasses.fields(record):
        name = renamed.get(f.name, f.name)
        columns.append(table.c[name] if name in table.c or joined is None else joined.c[name])
    return tuple(columns)


VEHICLE_READ = _read(VehicleRecord, VEHICLES, {"vehicle_id": "id"})
MARK_READ = _read(MarkRecord, MARKS, {}, joined=VEHICLES)  # plate type, plate number, VIN: its vehicle's
AUDIT_READ = _read(AuditEvent, AUDIT, {"event_id": "id"})

# Widths of the audit text columns: a value is cut to fit rather than refused (a too-long caller id
# or plate from a request must not make a whole batch of the audit log unwritable).
AUDIT_TEXT_WIDTHS = tuple((c.name, c.type.length or 0) for c in AUDIT.c if isinstance(c.type, String))


# -- the driver path's statements (driver.py runs them; see the measurements there) -------------
def _names(columns: Any) -> str:
    return ", ".join(f"{c.table.name}.{c.name}" for c in columns)


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _insert(table: Table, columns: tuple[str, ...], suffix: str = "") -> str:
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders(len(columns))}){suffix}"


# Issue, step 1: the group's vehicles, locked in id order, each with its current mark (NULLs if none).
# {types} and {numbers} are placeholder lists (`placeholders`).
ISSUE_VEHICLES = (
    f"SELECT {_names(VEHICLE_READ)}, {_names(MARK_READ)} FROM vehicles"
    " LEFT JOIN marks ON marks.serial = vehicles.current_serial"
    " WHERE vehicles.plate_type IN ({types}) AND vehicles.plate_number IN ({numbers}) ORDER BY vehicles.id"
)
LOCK_VEHICLES = " FOR UPDATE OF vehicles"  # PostgreSQL; SQLite's BEGIN IMMEDIATE already excludes writers
# Issue, step 2: marks by request id ({ids}: a placeholder list).
MARKS_BY_REQUEST_ID = (
    f"SELECT {_names(MARK_READ)} FROM marks JOIN vehicles ON vehicles.id = marks.vehicle_id"
    " WHERE marks.request_id IN ({ids})"
)
LAST_SERIAL = "SELECT coalesce(max(serial), 0) FROM marks"  # SQLite, the only writer
NEXT_SERIALS = "SELECT nextval(pg_get_serial_sequence('marks', 'serial')) FROM generate_series(1, ?)"  # PostgreSQL
MARK_COLUMNS = tuple(c.name for c in MARKS.c)  # a new mark's row, whole (mapping.row orders it)
INSERT_MARK = _insert(MARKS, MARK_COLUMNS)
SET_CURRENT_MARK = "UPDATE vehicles SET valid_until = ?, current_serial = ? WHERE id = ?"

# The change log (writes.log_changes). SQLite: ids given (the only writer); PostgreSQL: assigned
# under the change-log lock and returned.
LAST_CHANGE_ID = "SELECT coalesce(max(id), 0) FROM change_log"
CHANGE_COLUMNS = tuple(c.name for c in CHANGES.c)
INSERT_CHANGE = _insert(CHANGES, CHANGE_COLUMNS)
CHANGE_COLUMNS_BUT_ID = tuple(name for name in CHANGE_COLUMNS if name != "id")
INSERT_CHANGE_RETURNING = _insert(CHANGES, CHANGE_COLUMNS_BUT_ID, " RETURNING id")
# The index's tail of the change log: each change with its vehicle as it now reads.
CHANGES_SINCE = (
    f"SELECT {_names(VEHICLE_READ)}, change_log.id, change_log.revoked_serial FROM change_log"
    " JOIN vehicles ON vehicles.id = change_log.vehicle_id WHERE change_log.id > ? ORDER BY change_log.id LIMIT ?"
)

# The audit writer: the time, the texts (cut to AUDIT_TEXT_WIDTHS), the serial (mapping.audit_row).
_AUDIT_WRITTEN = ("at", *(name for name, _ in AUDIT_TEXT_WIDTHS), "serial")
assert set(_AUDIT_WRITTEN) == {c.name for c in AUDIT.c} - {"id"}, "mapping.audit_row writes every audit column"
INSERT_AUDIT = _insert(AUDIT, _AUDIT_WRITTEN)
