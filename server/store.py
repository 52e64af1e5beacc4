"""The store: vehicles, marks and the change log in one SQL database (the only SQLAlchemy user).

Every write commits its rows and a change-log row in one transaction. Change-log ids are
assigned in commit order (SQLite serialises writers; on PostgreSQL an advisory lock is taken
just before the change-log insert and held to commit), so a reader that tails `id > last`
never skips a row that commits later.

Lock order, so writers cannot deadlock one another: vehicle and mark rows first, the change-log
lock last (`_log_changes` is the final statement of every write transaction).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
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
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vimark.client.domain import VehicleCategory
from vimark.client.errors import InvalidArgument, NotFound, Unavailable
from vimark.server.records import Change, MarkPlan, MarkRecord, VehicleRecord

# An integer primary key that is SQLite's rowid (auto-assigned) and a bigint elsewhere.
_Id = BigInteger().with_variant(Integer, "sqlite")
_CHANGE_LOG_LOCK = 0x76696D61  # "vima": the advisory lock that orders change-log ids on PostgreSQL
_MIGRATION_LOCK = 0x76696D6D  # "vimm": serialises schema migrations of servers starting together


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


class Store:
    """vimark's database. `url` is a SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://..."""

    def __init__(self, url: str, *, migrate: bool = True, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_engine(
                url,
                pool_size=8,
                max_overflow=8,
                pool_pre_ping=True,
                connect_args={"connect_timeout": max(1, int(connect_timeout))},
            )
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
        """Translate database failures at the boundary: nothing SQLAlchemy leaks out."""
        try:
            yield
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) in _CONFLICT_STATES:
                raise _Conflict(f"concurrent writers collided: {exc.orig}") from exc
            raise Unavailable(f"database unavailable: {exc.orig}") from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._guard(), self.engine.connect() as conn:
            conn = conn.execution_options(vimark_write=True)
            with conn.begin():
                yield conn

    def _log_changes(self, conn: Connection, vehicle_ids: Sequence[int], revoked_serial: int | None = None) -> None:
        """The last statement of a write: take the change-log lock, then append the rows."""
        if not self.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHANGE_LOG_LOCK})
        now = int(dt.datetime.now(dt.UTC).timestamp())
        conn.execute(
            insert(ChangeRow),
            [{"vehicle_id": i, "revoked_serial": revoked_serial, "created_at": now} for i in vehicle_ids],
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
                query = select(VehicleRow.id, VehicleRow.vin, VehicleRow.current_serial, VehicleRow.valid_until).where(
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
                    vehicle_id, vin, serial, valid_until = existing[0]
                    if vin != v.vin:
                        serial = 0
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
    ) -> tuple[MarkRecord, bool]:
        """Issue in one transaction: decide (rules), insert the mark, sign it, make it current, log.

        Returns (mark, replayed); a request_id seen before returns its first mark and writes nothing."""
        try:
            with self._write() as conn:
                vehicle = self._vehicle_for_update(conn, plate_type, plate_number)
                # Checked after the row lock: a concurrent retry waits for the first attempt to
                # commit, then replays its mark instead of judging the rules a second time.
                earlier = self._mark_where(conn, MarkRow.request_id == request_id)
                if earlier is not None:
                    return earlier, True
                current = self._mark_where(conn, MarkRow.serial == vehicle.current_serial)
                plan = decide(vehicle, current)
                serial = conn.execute(
                    insert(MarkRow)
                    .values(
                        request_id=request_id,
                        vehicle_id=vehicle.vehicle_id,
                        valid_until=plan.valid_until,
                        reason=plan.reason,
                        issued_at=int(plan.issued_at.timestamp()),
                        valid_from=plan.valid_from,
                        inspected_on=plan.inspected_on,
                        station_id=plan.station_id,
                        key_id=0,
                        qr_text="",
                    )
                    .returning(MarkRow.serial)
                ).scalar_one()
                qr_text, key_id = sign(serial, vehicle, plan)
                conn.execute(update(MarkRow).where(MarkRow.serial == serial).values(qr_text=qr_text, key_id=key_id))
                conn.execute(
                    update(VehicleRow)
                    .where(VehicleRow.id == vehicle.vehicle_id)
                    .values(valid_until=plan.valid_until, current_serial=serial)
                )
                self._log_changes(conn, [vehicle.vehicle_id])
                mark = self._mark_where(conn, MarkRow.serial == serial)
                assert mark is not None
                return mark, False
        except IntegrityError:
            # A concurrent retry with the same request_id won the race: answer with its mark.
            earlier = self.mark_by_request_id(request_id)
            if earlier is None:
                raise
            return earlier, True

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
        with self._guard(), self.engine.connect() as conn:
            rows = conn.execute(
                select(ChangeRow.id.label("change_id"), ChangeRow.revoked_serial, *_VEHICLE_COLUMNS)
                .join(VehicleRow, VehicleRow.id == ChangeRow.vehicle_id)
                .where(ChangeRow.id > last_id)
                .order_by(ChangeRow.id)
                .limit(limit)
            ).all()
        return [Change(r.change_id, _vehicle(r), r.revoked_serial) for r in rows]

    def count_vehicles(self) -> int:
        with self._guard(), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(VehicleRow)).scalar_one())


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
