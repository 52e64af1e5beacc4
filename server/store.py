"""The store: vehicles, marks and the change log in one SQL database (the only SQLAlchemy user).

Every write commits its rows and a change-log row in one transaction. Change-log ids are
assigned in commit order (SQLite serialises writers; on PostgreSQL an advisory lock is taken
just before the change-log insert and held to commit), so a reader that tails `id > last`
never skips a row that commits later.

Lock order, so writers cannot deadlock one another: vehicle and mark rows first, the change-log
lock last (`_log_changes` is the final statement of every write transaction).

Issues are group-committed: concurrent calls share one transaction (`Store.issue`), which locks
all its vehicles in one statement in id order, writes every mark, then logs every change; so
the lock order above holds for a group as for a single write. The group's statements go to the
DBAPI driver directly (`_Sql`): SQLAlchemy's work per statement (cache keys, IN-list expansion,
result processing) was most of an Issue's time, and a group is one writer's critical section.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vimark.client.domain import VehicleCategory
from vimark.client.errors import InvalidArgument, NotFound, Unavailable, VimarkError
from vimark.server.group_commit import GroupCommitter
from vimark.server.records import AuditEvent, Change, MarkPlan, MarkRecord, VehicleRecord

# An integer primary key that is SQLite's rowid (auto-assigned) and a bigint elsewhere.
_Id = BigInteger().with_variant(Integer, "sqlite")
_CHANGE_LOG_LOCK = 0x76696D61  # "vima": the advisory lock that orders change-log ids on PostgreSQL
_MIGRATION_LOCK = 0x76696D6D  # "vimm": serialises schema migrations of servers starting together


FAIL_FAST_SECONDS = 1.0  # after the database failed to answer, how long calls fail at once
_CONFLICT_STATES = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure


class _Conflict(Unavailable):
    """A transaction lost a race with another writer; running it again is safe."""


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


# Widths of the audit columns: a value is cut to fit rather than refused (a too-long caller id or
# plate from a request must not make a whole batch of the audit log unwritable).
_AUDIT_WIDTHS = {c.name: c.type.length or 0 for c in AuditRow.__table__.c if isinstance(c.type, String)}


_AUDIT_TEXT = list(_AUDIT_WIDTHS.items())
_INSERT_AUDIT = (
    f"INSERT INTO audit_events (at, {', '.join(_AUDIT_WIDTHS)}, serial) VALUES (?, {'?, ' * len(_AUDIT_WIDTHS)}?)"
)


def _audit_values(e: AuditEvent) -> tuple[object, ...]:
    """The row for _INSERT_AUDIT: texts cut to their columns, a serial that is not one of ours 0."""
    texts = (getattr(e, name).replace("\x00", "")[:width] for name, width in _AUDIT_TEXT)
    return (e.at.timestamp(), *texts, e.serial if 0 <= e.serial < 2**63 else 0)


def _audit_event(row: Row[Any]) -> AuditEvent:
    return AuditEvent(
        at=dt.datetime.fromtimestamp(row.at, dt.UTC),
        caller_id=row.caller_id,
        role=row.role,
        rpc=row.rpc,
        plate_type=row.plate_type,
        plate_number=row.plate_number,
        verdict=row.verdict,
        serial=row.serial,
    )


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_VEHICLE_COLUMNS = tuple(VehicleRow.__table__.c)


def _vehicle(row: Row[Any] | Any) -> VehicleRecord:
    return VehicleRecord(
        vehicle_id=row.id,
        plate_type=row.plate_type,
        plate_number=row.plate_number,
        vin=row.vin,
        category=VehicleCategory(row.category),
        registered_on=row.registered_on,
        seats=row.seats,
        exemption_lost=row.exemption_lost,
        status_bits=row.status_bits,
        valid_until=row.valid_until,
        current_serial=row.current_serial,
    )


@dataclass(frozen=True)
class _IssueJob:
    """One Issue waiting for its group's transaction."""

    request_id: str
    plate_type: str
    plate_number: str
    decide: Callable[[VehicleRecord, MarkRecord | None], MarkPlan]
    sign: Callable[[int, VehicleRecord, MarkPlan], tuple[str, int]]


# (mark, replayed, change id or None for a replay), or the exception its caller gets.
_IssueOutcome = tuple[MarkRecord, bool, int | None] | BaseException
# Issues per group transaction: bounds a group's statement sizes and the wait of its last caller.
_ISSUE_GROUP_MAX = 64

# The Issue path's statements, written once in qmark style (`_Sql` adapts them to the driver).
_V_COLUMNS = (
    "v.id, v.plate_type, v.plate_number, v.vin, v.category, v.registered_on, v.seats, v.exemption_lost,"
    " v.status_bits, v.valid_until, v.current_serial"
)
_M_COLUMNS = (
    "m.serial, m.request_id, m.valid_until, m.reason, m.issued_at, m.valid_from, m.key_id, m.qr_text, m.revoked"
)
_MARK_INSERT = (
    "INSERT INTO marks (serial, request_id, vehicle_id, valid_until, reason, issued_at, valid_from, inspected_on,"
    " station_id, key_id, qr_text, revoked, revoked_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_VEHICLE_MARKED = "UPDATE vehicles SET valid_until = ?, current_serial = ? WHERE id = ?"


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class _Sql:
    """The driver's dialect for the Issue path's statements: its placeholder, how it stores a
    date, and its exception classes (a raw cursor raises the driver's, not SQLAlchemy's)."""

    def __init__(self, engine: Engine, is_sqlite: bool) -> None:
        dbapi = engine.dialect.loaded_dbapi
        self.is_sqlite = is_sqlite
        self.OperationalError: type[Exception] = dbapi.OperationalError
        self.IntegrityError: type[Exception] = dbapi.IntegrityError
        self.DatabaseError: type[Exception] = dbapi.DatabaseError

    def text(self, statement: str) -> str:
        # sqlite3 takes qmark parameters, psycopg format ones (no statement here contains a ? or a %).
        return statement if self.is_sqlite else statement.replace("?", "%s")

    def date_in(self, value: Any) -> dt.date:
        # SQLAlchemy stores a Date on SQLite as ISO text (YYYY-MM-DD); psycopg returns a date.
        return dt.date.fromisoformat(value) if self.is_sqlite else value  # type: ignore[no-any-return]

    def date_out(self, value: dt.date | None) -> Any:
        return value.isoformat() if self.is_sqlite and value is not None else value


def _raw_vehicle(r: Sequence[Any], sql: _Sql) -> VehicleRecord:
    """A vehicle from the first 11 columns of a row (`_V_COLUMNS`)."""
    return VehicleRecord(
        vehicle_id=r[0],
        plate_type=r[1],
        plate_number=r[2],
        vin=r[3],
        category=VehicleCategory(r[4]),
        registered_on=sql.date_in(r[5]),
        seats=r[6],
        exemption_lost=bool(r[7]),
        status_bits=r[8],
        valid_until=r[9],
        current_serial=r[10],
    )


def _raw_mark(m: Sequence[Any], vehicle_id: int, plate: tuple[str, str, str], sql: _Sql) -> MarkRecord:
    """A mark from the `_M_COLUMNS` of a row; `plate` is its vehicle's (plate type, plate number, VIN)."""
    return MarkRecord(
        serial=m[0],
        vehicle_id=vehicle_id,
        plate_type=plate[0],
        plate_number=plate[1],
        vin=plate[2],
        valid_until=m[2],
        reason=m[3],
        issued_at=dt.datetime.fromtimestamp(m[4], dt.UTC),
        valid_from=sql.date_in(m[5]),
        key_id=m[6],
        qr_text=m[7],
        request_id=m[1],
        revoked=bool(m[8]),
    )


class Store:
    """vimark's database. `url` is a SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://..."""

    def __init__(self, url: str, *, migrate: bool = True, connect_timeout: float = 2.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # Concurrent Issues share one transaction and one commit (one fsync): see `issue`.
        self._issues: GroupCommitter[_IssueJob, tuple[MarkRecord, bool, int | None]] = GroupCommitter(
            self._issue_group, max_batch=_ISSUE_GROUP_MAX
        )
        self._writer_lock: Path | None = None
        if self.is_sqlite:
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
            database = self.engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                self._writer_lock = Path(database + "-writer.lock")
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_engine(
                url,
                pool_size=8,
                max_overflow=8,
                pool_pre_ping=True,
                # A dead database must be noticed in seconds: a write then fails with UNAVAILABLE
                # (the SDK's four attempts fit its 10 s deadline) instead of hanging. connect_timeout
                # bounds a new connection (libpq's floor is 2 s); keepalives and tcp_user_timeout
                # bound a pooled one whose peer vanished (a partition: no RST, nothing ACKed),
                # which the kernel would otherwise retransmit to for about 15 minutes.
                connect_args={
                    "connect_timeout": max(2, int(connect_timeout)),
                    "keepalives": 1,
                    "keepalives_idle": 10,
                    "keepalives_interval": 5,
                    "keepalives_count": 3,
                    "tcp_user_timeout": 10_000,  # ms
                    # An acknowledged write must survive a crash even where the server's default
                    # was relaxed for speed.
                    "options": "-c synchronous_commit=on",
                },
            )
        self._sql = _Sql(self.engine, self.is_sqlite)
        self._unreachable_until = 0.0  # monotonic time before which calls fail fast (see _guard)
        self._unreachable_reason = ""
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._guard(), self.engine.begin() as conn:
            if not self.is_sqlite:  # replicas starting together: one migrates, the others wait
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Translate database failures at the boundary: nothing SQLAlchemy leaks out.

        After the database failed to answer, calls fail at once for FAIL_FAST_SECONDS instead of
        each waiting out a connect timeout: otherwise a stream of Issues during an outage holds
        every handler thread, and Verify (which needs no database) queues behind them. The first
        call after the pause tries the database again."""
        if time.monotonic() < self._unreachable_until:
            raise Unavailable(f"database unavailable (failing fast after: {self._unreachable_reason})")
        try:
            yield
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) in _CONFLICT_STATES:
                raise _Conflict(f"concurrent writers collided: {exc.orig}") from exc
            raise self._unreachable(exc.orig) from exc
        except self._sql.OperationalError as exc:  # from a driver cursor (the Issue path)
            if getattr(exc, "sqlstate", None) in _CONFLICT_STATES:
                raise _Conflict(f"concurrent writers collided: {exc}") from exc
            raise self._unreachable(exc) from exc

    def _unreachable(self, cause: object) -> Unavailable:
        self._unreachable_reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        self._unreachable_until = time.monotonic() + FAIL_FAST_SECONDS
        return Unavailable(f"database unavailable: {cause}")

    @contextmanager
    def _one_writer(self) -> Iterator[None]:
        """On a SQLite file, writers take turns on an flock beside it before BEGIN IMMEDIATE.

        SQLite admits one writer and makes the others poll with growing sleeps (its busy handler,
        up to 100 ms a nap): with `serve --workers 2` on one file that put an Issue's p99 over a
        second (load.bench issue_sqlite). A blocked flock wakes as soon as the lock is released,
        and the kernel drops it with the process, even on SIGKILL. Each use opens its own file
        description, so threads of one process queue too. The busy timeout stays for writers
        that are not vimark's."""
        if self._writer_lock is None:
            yield
            return
        try:
            fd = os.open(self._writer_lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise Unavailable(f"cannot open the SQLite writer lock {self._writer_lock}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # releases the GIL while it waits
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the lock

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._guard(), self._one_writer(), self.engine.connect() as conn:
            conn = conn.execution_options(vimark_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _cursor(self, *, write: bool = False) -> Iterator[Any]:
        """A driver cursor on a pooled connection, for the hot paths (Issue, the index's tail of the
        change log, the audit writer), which skip SQLAlchemy's Connection as they skip its statements. With
        `write`, one transaction (BEGIN IMMEDIATE on SQLite, as `_write`), committed on leaving:
        the commit has returned before the caller goes on."""
        with self._guard(), self._one_writer() if write else nullcontext():
            raw = self.engine.raw_connection()  # the pool pings it first (pool_pre_ping)
            try:
                cursor = raw.cursor()
                if write and self.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                if write:
                    raw.commit()
            except BaseException as exc:
                if isinstance(exc, self._sql.OperationalError):
                    raw.invalidate()  # maybe a dead connection: never hand it out again
                else:
                    raw.rollback()
                raise
            finally:
                raw.close()  # back to the pool, which rolls back whatever a read left open

    def _log_changes(
        self, conn: Connection, vehicle_ids: Sequence[int], revoked_serial: int | None = None
    ) -> list[int]:
        """The last statement of a write: take the change-log lock, then append the rows.
        Returns their change ids, in the order of `vehicle_ids`."""
        if not self.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHANGE_LOG_LOCK})
        now = int(dt.datetime.now(dt.UTC).timestamp())
        return list(
            conn.execute(
                insert(ChangeRow).returning(ChangeRow.id, sort_by_parameter_order=True),
                [{"vehicle_id": i, "revoked_serial": revoked_serial, "created_at": now} for i in vehicle_ids],
            ).scalars()
        )

    def _vehicle_for_update(self, conn: Connection, plate_type: str, plate_number: str) -> VehicleRecord:
        query = select(*_VEHICLE_COLUMNS).where(
            VehicleRow.plate_type == plate_type, VehicleRow.plate_number == plate_number
        )
        row = conn.execute(query if self.is_sqlite else query.with_for_update()).first()
        if row is None:
            raise NotFound(f"no vehicle {plate_number} with plate type {plate_type}")
        return _vehicle(row)

    # -- registry ----------------------------------------------------------------------------
    def upsert_vehicles(self, vehicles: Sequence[VehicleRecord]) -> tuple[int, int]:
        """Create or update by VIN (the durable identity), else by plate. Returns (created, updated).

        The registry's valid_until is applied only to a vehicle without a vimark mark: once
        vimark has issued, its own marks are the truth. A plate that now names another VIN (a
        plate reissued to a new vehicle) starts afresh: no mark, the registry's validity."""
        for _ in range(3):
            try:
                return self._upsert_vehicles(vehicles)
            except (IntegrityError, _Conflict):
                # A concurrent batch inserted one of these vehicles first, or the two batches met
                # as new rows in opposite orders: run again (existing rows are locked in id order).
                continue
        raise Unavailable("concurrent registry updates kept colliding on the same vehicles; retry")

    def _upsert_vehicles(self, vehicles: Sequence[VehicleRecord]) -> tuple[int, int]:
        created = updated = 0
        changed: list[int] = []
        with self._write() as conn:
            if not self.is_sqlite:  # lock the batch's existing rows in one order: batches never deadlock
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
                existing = conn.execute(query if self.is_sqlite else query.with_for_update()).all()
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
            self._log_changes(conn, changed)
        return created, updated

    def set_status(self, plate_type: str, plate_number: str, status_bits: int) -> VehicleRecord:
        with self._write() as conn:
            vehicle = self._vehicle_for_update(conn, plate_type, plate_number)
            conn.execute(update(VehicleRow).where(VehicleRow.id == vehicle.vehicle_id).values(status_bits=status_bits))
            self._log_changes(conn, [vehicle.vehicle_id])
        return VehicleRecord(**{**vehicle.__dict__, "status_bits": status_bits})

    def revoke_mark(self, serial: int, reason: str) -> None:
        with self._write() as conn:
            row = conn.execute(select(MarkRow.vehicle_id).where(MarkRow.serial == serial)).first()
            if row is None:
                raise NotFound(f"no mark with serial {serial}")
            conn.execute(
                update(MarkRow).where(MarkRow.serial == serial).values(revoked=True, revoked_reason=reason[:200])
            )
            self._log_changes(conn, [row.vehicle_id], revoked_serial=serial)

    # -- issuance ----------------------------------------------------------------------------
    def mark_by_request_id(self, request_id: str) -> MarkRecord | None:
        with self._guard(), self.engine.connect() as conn:
            return self._mark_where(conn, MarkRow.request_id == request_id)

    def mark_by_serial(self, serial: int) -> MarkRecord | None:
        with self._guard(), self.engine.connect() as conn:
            return self._mark_where(conn, MarkRow.serial == serial)

    def _mark_where(self, conn: Connection, condition: Any) -> MarkRecord | None:
        row = conn.execute(
            select(*MarkRow.__table__.c, VehicleRow.plate_type, VehicleRow.plate_number, VehicleRow.vin)
            .join(VehicleRow, VehicleRow.id == MarkRow.vehicle_id)
            .where(condition)
        ).first()
        if row is None:
            return None
        return MarkRecord(
            serial=row.serial,
            vehicle_id=row.vehicle_id,
            plate_type=row.plate_type,
            plate_number=row.plate_number,
            vin=row.vin,
            valid_until=row.valid_until,
            reason=row.reason,
            issued_at=dt.datetime.fromtimestamp(row.issued_at, dt.UTC),
            valid_from=row.valid_from,
            key_id=row.key_id,
            qr_text=row.qr_text,
            request_id=row.request_id,
            revoked=row.revoked,
        )

    def issue(
        self,
        request_id: str,
        plate_type: str,
        plate_number: str,
        decide: Callable[[VehicleRecord, MarkRecord | None], MarkPlan],
        sign: Callable[[int, VehicleRecord, MarkPlan], tuple[str, int]],
    ) -> tuple[MarkRecord, bool, int | None]:
        """Issue: decide (rules), sign, insert the mark, make it current, log; durable on return.

        Returns (mark, replayed, change id); a request_id seen before returns its first mark, writes
        nothing and has no change id. Concurrent calls are group-committed (`_issue_group`): each
        runs in isolation (its refusal or error is its own) but they share one transaction."""
        return self._issues.submit(_IssueJob(request_id, plate_type, plate_number, decide, sign))

    def _issue_group(self, jobs: Sequence[_IssueJob]) -> list[_IssueOutcome]:
        for attempt in range(3):
            try:
                return self._issue_group_once(jobs)
            except _Conflict:
                # Two groups met on the same rows (another server): nothing was written; run again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _issue_group_once(self, jobs: Sequence[_IssueJob]) -> list[_IssueOutcome]:
        """One transaction for the whole group, in lock order:
        1. lock every vehicle of the group in one statement, in id order (as registry batches do),
           reading each one's current mark with it;
        2. read the group's earlier marks (replays), after the locks; on SQLite the next serial
           and change id too (the only writer: BEGIN IMMEDIATE);
        3. per command: rules, a serial, the signature (no database: a refusal or error is that
           command's outcome alone); then every new mark row, whole, in one batch under a
           SAVEPOINT (if a concurrent server took a request_id, that batch is undone and the
           marks go in one SAVEPOINT each, so only that command is affected);
        4. the vehicles' new current marks, then the change-log rows (change-log lock last);
        5. commit; only then is any outcome returned."""
        sql = self._sql
        outcomes: list[_IssueOutcome] = [NotFound("not run")] * len(jobs)
        with self._cursor(write=True) as cursor:
            # 1. Both plate columns by IN (the plate index serves it); other pairs are dropped below.
            types = sorted({j.plate_type for j in jobs})
            numbers = sorted({j.plate_number for j in jobs})
            query = (
                f"SELECT {_V_COLUMNS}, {_M_COLUMNS} FROM vehicles v LEFT JOIN marks m ON m.serial = v.current_serial"
                f" WHERE v.plate_type IN ({_marks(len(types))}) AND v.plate_number IN ({_marks(len(numbers))})"
                " ORDER BY v.id" + ("" if self.is_sqlite else " FOR UPDATE OF v")
            )
            cursor.execute(sql.text(query), [*types, *numbers])
            vehicles: dict[tuple[str, str], VehicleRecord] = {}
            current: dict[int, MarkRecord] = {}
            for r in cursor.fetchall():
                vehicle = vehicles[(r[1], r[2])] = _raw_vehicle(r, sql)
                if r[11] is not None:  # the joined mark's serial
                    current[r[11]] = _raw_mark(r[11:], vehicle.vehicle_id, (r[1], r[2], r[3]), sql)
            # 2. Read after the row locks: a concurrent retry waited for the first attempt to
            # commit, and replays its mark instead of judging the rules a second time.
            marks = {m.request_id: m for m in self._marks_by_request_id(cursor, {j.request_id for j in jobs})}
            serials, next_change_id = self._allocate_ids(cursor, len(jobs))
            # 3. In request_id order: concurrent groups insert (and wait on) request_ids in one order.
            new: list[tuple[int, MarkRecord, tuple[Any, ...]]] = []  # (job position, mark, its row)
            for i in sorted(range(len(jobs)), key=lambda k: jobs[k].request_id):
                job = jobs[i]
                if job.request_id in marks:  # committed earlier, or earlier in this group
                    outcomes[i] = (marks[job.request_id], True, None)
                    continue
                target = vehicles.get((job.plate_type, job.plate_number))
                if target is None:
                    outcomes[i] = NotFound(f"no vehicle {job.plate_number} with plate type {job.plate_type}")
                    continue
                vehicle = target
                try:
                    plan = job.decide(vehicle, current.get(vehicle.current_serial))
                    serial = next(serials)
                    qr_text, key_id = job.sign(serial, vehicle, plan)
                except Exception as exc:  # a refusal (or a fault) of this command only
                    outcomes[i] = exc
                    continue
                issued_at = int(plan.issued_at.timestamp())
                row = (
                    serial,
                    job.request_id,
                    vehicle.vehicle_id,
                    plan.valid_until,
                    plan.reason,
                    issued_at,
                    sql.date_out(plan.valid_from),
                    sql.date_out(plan.inspected_on),
                    plan.station_id,
                    key_id,
                    qr_text,
                    False,  # revoked
                    "",  # revoked_reason
                )
                mark = MarkRecord(
                    serial=serial,
                    vehicle_id=vehicle.vehicle_id,
                    plate_type=vehicle.plate_type,
                    plate_number=vehicle.plate_number,
                    vin=vehicle.vin,
                    valid_until=plan.valid_until,
                    reason=plan.reason,
                    issued_at=dt.datetime.fromtimestamp(issued_at, dt.UTC),
                    valid_from=plan.valid_from,
                    key_id=key_id,
                    qr_text=qr_text,
                    request_id=job.request_id,
                    revoked=False,
                )
                marks[job.request_id] = current[serial] = mark
                vehicles[(job.plate_type, job.plate_number)] = replace(
                    vehicle, valid_until=plan.valid_until, current_serial=serial
                )
                new.append((i, mark, row))
            stored = self._insert_marks(cursor, [row for _, _, row in new])
            issued: list[tuple[int, MarkRecord]] = []
            for (i, mark, _), error in zip(new, stored, strict=True):
                if error is None:
                    issued.append((i, mark))
                    continue
                # Another server committed this request_id after step 2 (the insert waited for
                # it): answer with its mark, as a retry would. The vehicle keeps its state.
                earlier = self._marks_by_request_id(cursor, {mark.request_id})
                outcomes[i] = (earlier[0], True, None) if earlier else Unavailable(f"mark not stored: {error}")
            if issued:
                # 4. Each vehicle's last new mark in this group is its current one.
                final = {m.vehicle_id: (m.serial, m.valid_until) for _, m in issued}
                cursor.executemany(
                    sql.text(_VEHICLE_MARKED),
                    [(valid_until, serial, vehicle_id) for vehicle_id, (serial, valid_until) in sorted(final.items())],
                )
                change_ids = self._log_issues(cursor, [m.vehicle_id for _, m in issued], next_change_id)
                for (i, mark), change_id in zip(issued, change_ids, strict=True):
                    outcomes[i] = (mark, False, change_id)
        return outcomes  # 5. committed

    def _marks_by_request_id(self, cursor: Any, request_ids: set[str]) -> list[MarkRecord]:
        cursor.execute(
            self._sql.text(
                f"SELECT {_M_COLUMNS}, m.vehicle_id, v.plate_type, v.plate_number, v.vin FROM marks m"
                f" JOIN vehicles v ON v.id = m.vehicle_id WHERE m.request_id IN ({_marks(len(request_ids))})"
            ),
            sorted(request_ids),
        )
        return [_raw_mark(r, r[9], (r[10], r[11], r[12]), self._sql) for r in cursor.fetchall()]

    def _allocate_ids(self, cursor: Any, n: int) -> tuple[Iterator[int], int | None]:
        """n new mark serials, so a mark is signed before it is inserted (one row write, not two);
        and on SQLite the group's first change id (PostgreSQL assigns those under its lock, step 4)."""
        if self.is_sqlite:  # the only writer (BEGIN IMMEDIATE): the next rowids are ours
            cursor.execute(
                "SELECT (SELECT coalesce(max(serial), 0) FROM marks), (SELECT coalesce(max(id), 0) FROM change_log)"
            )
            top_serial, top_change = cursor.fetchone()
            return iter(range(top_serial + 1, top_serial + 1 + n)), top_change + 1
        cursor.execute(
            self._sql.text("SELECT nextval(pg_get_serial_sequence('marks', 'serial')) FROM generate_series(1, ?)"), [n]
        )
        return iter([r[0] for r in cursor.fetchall()]), None

    def _insert_marks(self, cursor: Any, rows: list[tuple[Any, ...]]) -> list[Exception | None]:
        """Insert mark rows: all in one batch, or, if that breaks a constraint (a request_id a
        concurrent server committed), each in its own SAVEPOINT. Returns each row's error or None."""
        if not rows:
            return []
        insert_mark = self._sql.text(_MARK_INSERT)
        try:
            cursor.execute("SAVEPOINT issue_marks")
            cursor.executemany(insert_mark, rows)
            cursor.execute("RELEASE SAVEPOINT issue_marks")
            return [None] * len(rows)
        except self._sql.IntegrityError:
            cursor.execute("ROLLBACK TO SAVEPOINT issue_marks")
        errors: list[Exception | None] = []
        for row in rows:
            try:
                cursor.execute("SAVEPOINT issue_mark")
                cursor.execute(insert_mark, row)
                cursor.execute("RELEASE SAVEPOINT issue_mark")
                errors.append(None)
            except self._sql.IntegrityError as exc:
                cursor.execute("ROLLBACK TO SAVEPOINT issue_mark")
                errors.append(exc)
        return errors

    def _log_issues(self, cursor: Any, vehicle_ids: Sequence[int], next_id: int | None) -> list[int]:
        """`_log_changes` for the Issue path: the change-log rows, last; their ids in order."""
        now = int(dt.datetime.now(dt.UTC).timestamp())
        if self.is_sqlite:  # ids from step 2: the only writer, so they follow commit order
            assert next_id is not None
            ids = list(range(next_id, next_id + len(vehicle_ids)))
            cursor.executemany(
                "INSERT INTO change_log (id, vehicle_id, revoked_serial, created_at) VALUES (?, ?, NULL, ?)",
                [(i, v, now) for i, v in zip(ids, vehicle_ids, strict=True)],
            )
            return ids
        # Ids assigned while holding the change-log lock, to commit: commit order (module docstring).
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHANGE_LOG_LOCK])
        cursor.executemany(
            "INSERT INTO change_log (vehicle_id, revoked_serial, created_at) VALUES (%s, NULL, %s) RETURNING id",
            [(v, now) for v in vehicle_ids],
            returning=True,
        )
        ids = []
        while True:  # one result per row, in the order of the rows
            ids.append(cursor.fetchone()[0])
            if not cursor.nextset():
                return ids

    # -- feeding the index -------------------------------------------------------------------
    def snapshot(self) -> tuple[int, list[VehicleRecord], set[int]]:
        """Everything the index needs, read in one consistent transaction:
        (last change id, every vehicle, every revoked serial)."""
        with self._guard(), self.engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                last = conn.execute(select(func.coalesce(func.max(ChangeRow.id), 0))).scalar_one()
                vehicles = [_vehicle(r) for r in conn.execute(select(*_VEHICLE_COLUMNS).order_by(VehicleRow.id))]
                revoked = set(conn.execute(select(MarkRow.serial).where(MarkRow.revoked)).scalars())
        return last, vehicles, revoked

    def changes_since(self, last_id: int, limit: int = 5000) -> list[Change]:
        # Through the driver: the index tails the log after every Issue group (see `_cursor`).
        with self._cursor() as cursor:
            cursor.execute(
                self._sql.text(
                    f"SELECT {_V_COLUMNS}, c.id, c.revoked_serial FROM change_log c"
                    " JOIN vehicles v ON v.id = c.vehicle_id WHERE c.id > ? ORDER BY c.id LIMIT ?"
                ),
                (last_id, limit),
            )
            rows = cursor.fetchall()
        return [Change(r[11], _raw_vehicle(r, self._sql), r[12]) for r in rows]

    def count_vehicles(self) -> int:
        with self._guard(), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(VehicleRow)).scalar_one())

    # -- audit log ---------------------------------------------------------------------------
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Write a batch of audit events in one transaction (one multi-row insert)."""
        if not events:
            return
        rows = [_audit_values(e) for e in events]
        # Through the driver, not SQLAlchemy's insert: the writer shares the GIL with the verify
        # path, and SQLAlchemy's per-row work held it long enough to show in Verify's p99.
        try:
            with self._cursor(write=True) as cursor:
                cursor.executemany(self._sql.text(_INSERT_AUDIT), rows)
        except self._sql.DatabaseError as exc:  # anything but OperationalError, which _guard made Unavailable
            raise VimarkError(f"audit events refused by the database: {exc}", reason="AUDIT_WRITE_FAILED") from exc

    def audit_events(
        self,
        *,
        plate_number: str | None = None,
        caller_id: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """Audit events matching every filter given, oldest first, at most `limit` of them
        (to page on, ask again with `since` set to the last event's time)."""
        if limit < 1:
            raise InvalidArgument("limit", f"must be at least 1, not {limit}")
        if since is not None and since.tzinfo is None:
            raise InvalidArgument("since", "needs a time zone (a naive datetime is ambiguous)")
        query = select(*AuditRow.__table__.c).order_by(AuditRow.at, AuditRow.id).limit(limit)
        if plate_number is not None:
            query = query.where(AuditRow.plate_number == plate_number)
        if caller_id is not None:
            query = query.where(AuditRow.caller_id == caller_id)
        if since is not None:
            query = query.where(AuditRow.at >= since.timestamp())
        try:
            with self._guard(), self.engine.connect() as conn:
                rows = conn.execute(query).all()
        except DBAPIError as exc:  # e.g. PostgreSQL's undefined table: a database never migrated
            raise Unavailable(f"cannot read the audit log (is the schema migrated?): {exc.orig}") from exc
        return [_audit_event(r) for r in rows]


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from pysqlite so writes can BEGIN IMMEDIATE (no upgrade deadlocks).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # durable: what returned OK survives a power cut
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("vimark_write") else "BEGIN")


__all__ = ["Base", "Store"]
