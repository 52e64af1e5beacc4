"""Reads: marks, the index's snapshot and its tail of the change log, counts, the audit log.

SQLAlchemy Core, but for the index's tail of the change log (driver.py says why). Every row
becomes a record through mapping.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import DBAPIError

from vimark.client.errors import InvalidArgument, Unavailable
from vimark.server.records import AuditEvent, Change, MarkRecord, VehicleColumns, VehicleRecord, VehicleSnapshot
from vimark.server.store import audit_chain, mapping, schema
from vimark.server.store.engine import Database
from vimark.server.store.schema import (
    AUDIT_READ,
    MARK_READ,
    VEHICLE_READ,
    AuditAnchorRow,
    AuditRow,
    ChangeRow,
    IssueRequestRow,
    MarkRow,
    StoreIdentityRow,
    VehicleRow,
)


class Reads:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- marks -------------------------------------------------------------------------------
    def mark_by_request_id(self, request_id: str) -> MarkRecord | None:
        """The mark the request was answered with (a new mark, or a copy of the current one)."""
        answered = select(IssueRequestRow.serial).where(IssueRequestRow.request_id == request_id).scalar_subquery()
        # Or the mark granted under it by a server of a version before issue_requests.
        return self._mark_where((MarkRow.serial == answered) | (MarkRow.request_id == request_id))

    def mark_by_serial(self, serial: int) -> MarkRecord | None:
        return self._mark_where(MarkRow.serial == serial)

    def _mark_where(self, condition: ColumnElement[bool]) -> MarkRecord | None:
        query = (
            select(*MARK_READ)
            .select_from(schema.MARKS.join(schema.VEHICLES, VehicleRow.id == MarkRow.vehicle_id))
            .where(condition)
        )
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else mapping.mark(row)

    # -- feeding the index -------------------------------------------------------------------
    def snapshot(self) -> tuple[int, list[VehicleRecord], set[int]]:
        with self._db.read(consistent=True) as conn:
            last = conn.execute(select(func.coalesce(func.max(ChangeRow.id), 0))).scalar_one()
            vehicles = [mapping.vehicle(r) for r in conn.execute(select(*VEHICLE_READ).order_by(VehicleRow.id))]
            revoked = set(conn.execute(select(MarkRow.serial).where(MarkRow.revoked)).scalars())
        return last, vehicles, revoked

    @contextmanager
    def snapshot_chunks(self, chunk: int) -> Iterator[VehicleSnapshot]:
        """`snapshot` without a record per vehicle: in the same one transaction, the vehicles
        come `chunk` at a time as columns (records.VehicleColumns). On SQLite each range of ids is
        one aggregate query whose columns numpy parses (`_range_columns`); on PostgreSQL they stream
        off a server-side cursor, which would otherwise hold the whole result in the client."""
        if chunk < 1:
            raise InvalidArgument("chunk", f"must be at least 1, not {chunk}")
        sqlite = self._db.is_sqlite
        with self._db.read(consistent=True) as conn:
            last = conn.execute(select(func.coalesce(func.max(ChangeRow.id), 0))).scalar_one()
            top = conn.execute(select(func.coalesce(func.max(VehicleRow.id), 0))).scalar_one()
            revoked = set(conn.execute(select(MarkRow.serial).where(MarkRow.revoked)).scalars())
            raw = conn.connection.driver_connection
            cursor = raw.cursor() if sqlite else raw.cursor(name="vimark_snapshot")  # type: ignore[union-attr]
            with closing(cursor) as c:
                if sqlite:
                    chunks = _range_columns(c, chunk, top)
                else:
                    c.execute(schema.SNAPSHOT_VEHICLES["postgresql"])
                    chunks = _column_chunks(c, chunk)
                with closing(chunks):  # a read still on its thread ends before the cursor does
                    yield VehicleSnapshot(last, top, revoked, chunks)

    def changes_since(self, last_id: int, limit: int) -> list[Change]:
        driver = self._db.driver
        with self._db.driver_cursor() as c:
            c.execute(driver.sql(schema.CHANGES_SINCE), (last_id, limit))
            rows = c.fetchall()
        at = mapping.VEHICLE_WIDTH  # then the change's id and revoked serial
        return [Change(r[at], mapping.vehicle(r, driver.day_in), r[at + 1]) for r in rows]

    def identity(self) -> str:
        with self._db.read() as conn:
            return str(conn.execute(select(StoreIdentityRow.store_id).where(StoreIdentityRow.id == 1)).scalar_one())

    def change_log_span(self) -> tuple[int, int]:
        with self._db.read() as conn:
            first, last = conn.execute(
                select(func.coalesce(func.min(ChangeRow.id), 0), func.coalesce(func.max(ChangeRow.id), 0))
            ).one()
        return int(first), int(last)

    def change_fingerprint(self, change_id: int) -> str:
        with self._db.read() as conn:
            row = conn.execute(
                select(ChangeRow.vehicle_id, ChangeRow.revoked_serial, ChangeRow.created_at).where(
                    ChangeRow.id == change_id
                )
            ).first()
        return "" if row is None else ":".join(map(str, row))

    def change_columns_since(self, last_id: int, limit: int) -> tuple[int, int, VehicleColumns, list[int]]:
        """`changes_since` for a long run, as columns: (rows read, last change id, every vehicle
        changed once as it now reads, the serials revoked), with no record per change."""
        driver = self._db.driver
        with self._db.driver_cursor() as c:
            c.execute(
                driver.sql(schema.CHANGE_COLUMNS_SINCE["sqlite" if self._db.is_sqlite else "postgresql"]),
                (last_id, limit),
            )
            rows = c.fetchall()
        if not rows:
            return 0, last_id, VehicleColumns(*([] for _ in range(mapping.VEHICLE_WIDTH))), []
        at = mapping.VEHICLE_WIDTH
        latest = {r[0]: r[:at] for r in rows}  # each vehicle once: every row reads it as it now is
        revoked = [r[at + 1] for r in rows if r[at + 1] is not None]
        return len(rows), rows[-1][at], _columns(list(latest.values())), revoked

    def count_vehicles(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(VehicleRow)).scalar_one())

    # -- audit log ---------------------------------------------------------------------------
    def audit_events(
        self, *, plate_number: str | None, caller_id: str | None, since: dt.datetime | None, limit: int
    ) -> list[AuditEvent]:
        _check_limit(limit)
        where = _audit_filters(plate_number, caller_id, since=since, until=None)
        return self._audit_read(where, (AuditRow.at, AuditRow.id), limit)

    def list_audit_events(
        self,
        *,
        plate_number: str | None,
        caller_id: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        after_id: int,
        limit: int,
    ) -> list[AuditEvent]:
        _check_limit(limit)
        if after_id < 0:
            raise InvalidArgument("after_id", f"must be 0 or an event's id, not {after_id}")
        where = _audit_filters(plate_number, caller_id, since=since, until=until)
        return self._audit_read([*where, AuditRow.id > after_id], (AuditRow.id,), limit)

    def _audit_read(self, where: list[ColumnElement[bool]], order: tuple[Any, ...], limit: int) -> list[AuditEvent]:
        query = select(*AUDIT_READ).where(*where).order_by(*order).limit(limit)
        try:
            with self._db.read() as conn:
                rows = conn.execute(query).all()
        except DBAPIError as exc:  # e.g. PostgreSQL's undefined table: a database never migrated
            raise Unavailable(f"cannot read the audit log (is the schema migrated?): {exc.orig}") from exc
        return [mapping.audit_event(r) for r in rows]

    def verify_audit_chain(self, page: int) -> tuple[int, str, int | None]:
        """Walk the audit log in id order, from the anchor (or the start), in one snapshot, and
        recompute each event's chain from the one stored before it (audit_chain.py)."""
        if page < 1:
            raise InvalidArgument("page", f"must be at least 1, not {page}")
        content = [schema.AUDIT.c[name] for name in schema.AUDIT_CONTENT]
        try:
            with self._db.read(consistent=True) as conn:
                anchor = conn.execute(
                    select(AuditAnchorRow.event_id, AuditAnchorRow.chain).where(AuditAnchorRow.id == 1)
                ).first()
                after, prev = (anchor[0], anchor[1]) if anchor is not None else (0, audit_chain.GENESIS)
                checked, first_broken = 0, None
                while True:
                    query = select(AuditRow.id, *content, AuditRow.chain).where(AuditRow.id > after)
                    rows = conn.execute(query.order_by(AuditRow.id).limit(page)).all()
                    for r in rows:
                        if first_broken is None and r[-1] != audit_chain.link(prev, *r[1:-1]):
                            first_broken = r[0]
                        prev = r[-1]  # the next one follows from what is stored, so a break is found where it is
                    checked += len(rows)
                    if len(rows) < page:
                        return checked, prev, first_broken
                    after = rows[-1][0]
        except DBAPIError as exc:  # e.g. PostgreSQL's undefined table: a database never migrated
            raise Unavailable(f"cannot read the audit log (is the schema migrated?): {exc.orig}") from exc


_UTF8 = tuple(i for i, c in enumerate(VEHICLE_READ) if c.name in ("plate_number", "vin"))  # as bytes in VehicleColumns


def _column_chunks(cursor: Any, size: int) -> Generator[VehicleColumns, None, None]:
    while rows := cursor.fetchmany(size):
        columns = _columns(rows)
        del rows  # the row tuples go; their values live on in the columns
        yield columns


def _columns(rows: Sequence[Sequence[Any]]) -> VehicleColumns:
    """Rows of the index's columns (schema._INDEX_COLUMNS) as VehicleColumns: the text as UTF-8."""
    columns: list[Any] = list(zip(*rows, strict=True))
    for i in _UTF8:
        columns[i] = [v.encode() for v in columns[i]]
    return VehicleColumns(*columns)


def _range_columns(cursor: Any, size: int, top: int) -> Generator[VehicleColumns, None, None]:
    """Every vehicle, as columns of `size` ids at a time, each range read by one aggregate query
    (schema.SNAPSHOT_RANGE_SQLITE) and parsed by numpy: about a third of the time of fetching
    rows (1 M vehicles: 0.76 s of SQLite and 0.2 s of parsing, against 2.4 s). The next range is
    read on a second thread while this one is parsed and taken by the index (SQLite runs without
    the GIL): one connection, one read transaction, used by one thread at a time. A range whose
    text does not split into its count of values (a stored value holding a separator) is read
    row by row instead."""

    def read(after: int) -> tuple[int, int, list[str]]:
        while after < top:
            count, *texts = cursor.execute(schema.SNAPSHOT_RANGE_SQLITE, (after, after + size)).fetchone()
            if count:
                return after, count, texts
            following = cursor.execute(schema.SNAPSHOT_NEXT_ID, (after,)).fetchone()[0]  # a gap wider than a range
            after = top if following is None else following - 1
        return after, 0, []

    with ThreadPoolExecutor(1, thread_name_prefix="vimark-snapshot") as reader:
        pending = reader.submit(read, 0)
        while True:
            after, count, texts = pending.result()
            if not count:
                return
            pending = reader.submit(read, after + size)
            columns = _parse_range(count, texts)
            if columns is None:
                pending.result()  # the cursor's turn is over: now this range, row by row
                columns = _columns(cursor.execute(schema.SNAPSHOT_RANGE_ROWS_SQLITE, (after, after + size)).fetchall())
            yield columns


def _parse_range(count: int, texts: Sequence[str]) -> VehicleColumns | None:
    columns: list[Any] = []
    for i, text in enumerate(texts):
        if i in schema.SNAPSHOT_TEXT_COLUMNS:
            values: Any = text.encode().split(b"\n") if i in _UTF8 else text.split("\n")
        else:
            try:
                values = np.fromstring(text, np.int64, sep=",")
            except ValueError:  # not whole numbers (a value written past the registry's checks)
                return None
        if len(values) != count:
            return None
        columns.append(values)
    ids = columns[0]
    if np.any(np.diff(ids) <= 0):  # each aggregate in one order, but not necessarily the ids'
        order = np.argsort(ids, kind="stable")
        columns = [c[order] if isinstance(c, np.ndarray) else [c[j] for j in order] for c in columns]
    return VehicleColumns(*columns)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidArgument("limit", f"must be at least 1, not {limit}")


def _audit_filters(
    plate_number: str | None, caller_id: str | None, *, since: dt.datetime | None, until: dt.datetime | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if plate_number is not None:
        where.append(AuditRow.plate_number == plate_number)
    if caller_id is not None:
        where.append(AuditRow.caller_id == caller_id)
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.tzinfo is None:
            raise InvalidArgument(name, "needs a time zone (a naive datetime is ambiguous)")
    if since is not None:
        where.append(AuditRow.at >= since.timestamp())  # inclusive
    if until is not None:
        where.append(AuditRow.at < until.timestamp())  # exclusive
    return where
