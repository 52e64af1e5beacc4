"""The tables, each column defined once here, and everything else derived from them: the columns
each record is read from (`VEHICLE_READ`, `MARK_READ`, `AUDIT_READ`) and the statements of the
driver path (`driver.py`), rendered from those columns in qmark style.

A column added to a table with rows in it has a server default too (`server_default`), as its
migration needs one for the rows already there.

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
    station_id: Mapped[str] = mapped_column(String(64), default="")
    key_id: Mapped[int] = mapped_column(Integer)
    qr_text: Mapped[str] = mapped_column(Text)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_reason: Mapped[str] = mapped_column(String(200), default="")
    issued_by: Mapped[str] = mapped_column(String(80), default="", server_default="")  # "role/caller_id"
    issuer_fingerprint: Mapped[str] = mapped_column(String(64), default="", server_default="")  # hex SHA-256
    # The plate and VIN the mark's QR text signs, kept at issue so police terminals' status
    # snapshot is built by joins, not by decoding every mark (server/terminal_status.py). ''
    # for rows written before migration 0005 or by a writer that does not set them: read from qr_text.
    signed_plate_type: Mapped[str] = mapped_column(String(2), default="", server_default="")
    signed_plate_number: Mapped[str] = mapped_column(String(16), default="", server_default="")
    signed_vin: Mapped[str] = mapped_column(String(17), default="", server_default="")


class IssueRequestRow(Base):
    """One answered Issue request: which mark it was answered with (a new one, or a copy of the
    current one), so a retry of the request gets the same answer. `digest` is the request's
    parameters hashed by Store.issue's caller ("" = unknown: rows from before it was kept)."""

    __tablename__ = "issue_requests"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[int] = mapped_column(BigInteger)  # the mark answered
    digest: Mapped[str] = mapped_column(String(64), default="", server_default="")
    at: Mapped[float] = mapped_column(Double)  # Unix seconds


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
    # A Verdict name; FOUND / NOT_FOUND for a lookup; ISSUED, COPIED, PRESENTED... or REFUSED_<reason> for an issuer
    verdict: Mapped[str] = mapped_column(String(48))
    serial: Mapped[int] = mapped_column(BigInteger)  # 0 = no mark identified
    fingerprint: Mapped[str] = mapped_column(String(64), default="", server_default="")  # caller's certificate
    chain: Mapped[str] = mapped_column(String(64), default="", server_default="")  # audit_chain.link


class StoreIdentityRow(Base):
    """This database's random id (one row, id 1, made by migration 0004): what an index
    checkpoint names, so one written for another database is refused."""

    __tablename__ = "store_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    store_id: Mapped[str] = mapped_column(String(36))


class AuditAnchorRow(Base):
    """Where the audit hash chain continues after pruned events: the last pruned event's id and
    chain (one row, id 1, once anything was pruned)."""

    __tablename__ = "audit_chain_anchor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    event_id: Mapped[int] = mapped_column(BigInteger)
    chain: Mapped[str] = mapped_column(String(64))


VEHICLES: Table = Base.metadata.tables["vehicles"]
MARKS: Table = Base.metadata.tables["marks"]
CHANGES: Table = Base.metadata.tables["change_log"]
AUDIT: Table = Base.metadata.tables["audit_events"]
REQUESTS: Table = Base.metadata.tables["issue_requests"]
ANCHOR: Table = Base.metadata.tables["audit_chain_anchor"]


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

# An audit event's stored values that its chain is made of (audit_chain.canonical's arguments, in
# its order): every column but the id and the chain itself.
AUDIT_CONTENT = tuple(c.name for c in AUDIT.c if c.name not in ("id", "chain"))
assert AUDIT_CONTENT == (
    "at", "caller_id", "role", "rpc", "plate_type", "plate_number", "verdict", "serial", "fingerprint"
), "audit_chain.canonical hashes these columns in this order"  # fmt: skip
# Widths of the audit text columns: a value is cut to fit rather than refused (a too-long caller id
# or plate from a request must not make a whole batch of the audit log unwritable).
AUDIT_TEXT_WIDTHS = {c.name: c.type.length or 0 for c in AUDIT.c if isinstance(c.type, String) and c.name != "chain"}


def _width(column: Column[Any]) -> int:
    assert isinstance(column.type, String) and column.type.length, f"{column} is a text of bounded width"
    return column.type.length


# Widths of the texts a mark plan carries: a plan that does not fit is refused, that command only.
MARK_TEXT_WIDTHS = {name: _width(MARKS.c[name]) for name in ("station_id", "issued_by", "issuer_fingerprint")}
REQUEST_DIGEST_WIDTH = _width(REQUESTS.c.digest)


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
# Issue, step 1b (PostgreSQL): the locked vehicles' current marks read again. A group that waited
# for another server's lock gets the vehicle re-checked after that commit, but the joined mark
# columns as of its own snapshot (NULL for a mark made meanwhile): a statement after the lock sees
# the commit ({serials}: a placeholder list).
CURRENT_MARKS = (
    f"SELECT {_names(MARK_READ)} FROM marks JOIN vehicles ON vehicles.id = marks.vehicle_id"
    " WHERE marks.serial IN ({serials}) FOR SHARE OF marks"
)
# Issue, step 2: requests answered before, each with its digest and its mark as it now reads
# ({ids}: a placeholder list).
REQUESTS_BY_ID = (
    f"SELECT issue_requests.request_id, issue_requests.digest, {_names(MARK_READ)} FROM issue_requests"
    " JOIN marks ON marks.serial = issue_requests.serial JOIN vehicles ON vehicles.id = marks.vehicle_id"
    " WHERE issue_requests.request_id IN ({ids})"
)
# Marks by their grant's request id ({ids}): a mark with no request row (one whose row was lost)
# still answers its request; servers of two versions must not share a database (README).
MARKS_BY_REQUEST_ID = (
    f"SELECT {_names(MARK_READ)} FROM marks JOIN vehicles ON vehicles.id = marks.vehicle_id"
    " WHERE marks.request_id IN ({ids})"
)
REQUEST_COLUMNS = tuple(c.name for c in REQUESTS.c)
INSERT_REQUEST = _insert(REQUESTS, REQUEST_COLUMNS)
RESIGN_MARK = "UPDATE marks SET qr_text = ?, key_id = ? WHERE serial = ?"  # a copy signed with the active key
LAST_SERIAL = "SELECT coalesce(max(serial), 0) FROM marks"  # SQLite, the only writer
NEXT_SERIALS = "SELECT nextval(pg_get_serial_sequence('marks', 'serial')) FROM generate_series(1, ?)"  # PostgreSQL
SIGNED_PLATE_COLUMNS = ("signed_plate_type", "signed_plate_number", "signed_vin")
# A mark's columns before migration 0005 added its signed plate (backfill.py checks its row order
# against these, then appends the signed plate as SIGNED_MARK_COLUMNS does).
MARK_COLUMNS = tuple(c.name for c in MARKS.c if c.name not in SIGNED_PLATE_COLUMNS)
INSERT_MARK = _insert(MARKS, MARK_COLUMNS)
SIGNED_MARK_COLUMNS = MARK_COLUMNS + SIGNED_PLATE_COLUMNS  # a new mark's row, whole (mapping.row orders it)
INSERT_SIGNED_MARK = _insert(MARKS, SIGNED_MARK_COLUMNS)
SET_CURRENT_MARK = "UPDATE vehicles SET valid_until = ?, current_serial = ? WHERE id = ?"

# The change log (writes.log_changes). SQLite: ids given (the only writer); PostgreSQL: assigned
# under the change-log lock and returned.
LAST_CHANGE_ID = "SELECT coalesce(max(id), 0) FROM change_log"
CHANGE_COLUMNS = tuple(c.name for c in CHANGES.c)
INSERT_CHANGE = _insert(CHANGES, CHANGE_COLUMNS)
# SQLite's change-log writer (writes.log_changes): a run of vehicles' changes in one statement, from
# the first id on, each vehicle id an element of a JSON array (json_each numbers them from 0).
INSERT_CHANGES_SQLITE = (
    "INSERT INTO change_log (id, vehicle_id, revoked_serial, created_at) SELECT ? + key, value, ?, ? FROM json_each(?)"
)
assert set(CHANGE_COLUMNS) == {"id", "vehicle_id", "revoked_serial", "created_at"}, "INSERT_CHANGES_SQLITE writes each"
CHANGE_COLUMNS_BUT_ID = tuple(name for name in CHANGE_COLUMNS if name != "id")
INSERT_CHANGE_RETURNING = _insert(CHANGES, CHANGE_COLUMNS_BUT_ID, " RETURNING id")
# The index's tail of the change log: each change with its vehicle as it now reads.
CHANGES_SINCE = (
    f"SELECT {_names(VEHICLE_READ)}, change_log.id, change_log.revoked_serial FROM change_log"
    " JOIN vehicles ON vehicles.id = change_log.vehicle_id WHERE change_log.id > ? ORDER BY change_log.id LIMIT ?"
)

# The index's reads (records.VehicleColumns): each vehicle column in VEHICLE_READ's order as the
# index takes it, computed by the database so that no object is made per vehicle for it: the
# registration date as its ordinal (date.toordinal(): day 1 is 0001-01-01), the plate type as its
# number, no valid-until month as 0.
_INDEX_VALUES = {
    "sqlite": {
        "registered_on": "CAST(julianday(vehicles.registered_on) - 1721424.5 AS INTEGER)",
        "plate_type": "CAST(vehicles.plate_type AS INTEGER)",
        "valid_until": "coalesce(vehicles.valid_until, 0)",
        "exemption_lost": "CAST(vehicles.exemption_lost AS INTEGER)",
    },
    "postgresql": {
        "registered_on": "(vehicles.registered_on - DATE '0001-01-01') + 1",
        "plate_type": "CAST(vehicles.plate_type AS INTEGER)",
        "valid_until": "coalesce(vehicles.valid_until, 0)",
        "exemption_lost": "CAST(vehicles.exemption_lost AS INTEGER)",
    },
}
_INDEX_COLUMNS = {
    dialect: [values.get(c.name, f"vehicles.{c.name}") for c in VEHICLE_READ]
    for dialect, values in _INDEX_VALUES.items()
}
# The index's start on PostgreSQL (reads.snapshot_chunks), in id order: the text spool is written in order.
SNAPSHOT_VEHICLES = {
    d: f"SELECT {', '.join(cs)} FROM vehicles ORDER BY vehicles.id" for d, cs in _INDEX_COLUMNS.items()
}
# ... and on SQLite, a range of ids at a time, each column of the range as one text (one Python
# object per column, not per vehicle; reads.py parses them with numpy): the count, then the columns,
# numbers joined by "," and text by a newline (no stored value holds either:
# reads.py checks that each column splits into `count` values, and reads a range that does not
# row by row). All the aggregates of one query see its rows in one order, so the columns line up.
_TEXT_COLUMNS = ("plate_number", "vin", "category")
SNAPSHOT_RANGE_SQLITE = (
    "SELECT count(*), "
    + ", ".join(
        f"group_concat({e}, char(10))" if c.name in _TEXT_COLUMNS else f"group_concat({e}, ',')"
        for c, e in zip(VEHICLE_READ, _INDEX_COLUMNS["sqlite"], strict=True)
    )
    + " FROM vehicles WHERE vehicles.id > ? AND vehicles.id <= ?"
)
SNAPSHOT_RANGE_ROWS_SQLITE = (
    f"SELECT {', '.join(_INDEX_COLUMNS['sqlite'])} FROM vehicles"
    " WHERE vehicles.id > ? AND vehicles.id <= ? ORDER BY vehicles.id"
)
SNAPSHOT_NEXT_ID = "SELECT min(id) FROM vehicles WHERE id > ?"
SNAPSHOT_TEXT_COLUMNS = tuple(i for i, c in enumerate(VEHICLE_READ) if c.name in _TEXT_COLUMNS)

# The index's bulk tail (reads.change_columns_since): CHANGES_SINCE with the vehicle's columns as
# the index reads them.
CHANGE_COLUMNS_SINCE = {
    dialect: f"SELECT {', '.join(cs)}, change_log.id, change_log.revoked_serial FROM change_log"
    " JOIN vehicles ON vehicles.id = change_log.vehicle_id WHERE change_log.id > ? ORDER BY change_log.id LIMIT ?"
    for dialect, cs in _INDEX_COLUMNS.items()
}

# The audit writer (writes.append_audit): each row is its content (mapping.audit_contents) and its
# chain; on SQLite with its id first (the only writer gives them: ids never go back after a prune).
LAST_AUDIT = "SELECT id, chain FROM audit_events ORDER BY id DESC LIMIT 1"
AUDIT_ANCHOR = "SELECT event_id, chain FROM audit_chain_anchor WHERE id = 1"
INSERT_AUDIT = _insert(AUDIT, (*AUDIT_CONTENT, "chain"))
INSERT_AUDIT_WITH_ID = _insert(AUDIT, ("id", *AUDIT_CONTENT, "chain"))
assert {"id", *AUDIT_CONTENT, "chain"} == set(AUDIT.c.keys()), "the audit writer writes every audit column"
