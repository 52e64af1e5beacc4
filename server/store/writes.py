"""Writes: the registry's vehicles, statuses, revocations, Issue (group-committed) and the audit log.

Every write commits its rows and its change-log rows in one transaction: `log_changes` is the
last statement of each. Change-log ids are assigned in commit order (SQLite serialises writers;
on PostgreSQL an advisory lock is taken just before the change-log insert and held to commit), so
a reader that tails `id > last` never skips a row that commits later.

Lock order, so writers cannot deadlock one another: vehicle and mark rows first, the change-log
lock last.

Issues are group-committed: concurrent calls share one transaction (`Writes.issue`), which locks
all its vehicles in one statement in id order, writes every mark, then logs every change; so
the lock order above holds for a group as for a single write. The group's statements, the
change-log rows and the audit rows go to the driver directly (driver.py says why); the rest is
SQLAlchemy Core.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from vimark.client.errors import InvalidArgument, NotFound, Unavailable, VimarkError
from vimark.server.group_commit import GroupCommitter
from vimark.server.records import AuditEvent, MarkPlan, MarkRecord, VehicleRecord
from vimark.server.store import mapping, schema
from vimark.server.store.driver import Driver, cursor_in
from vimark.server.store.engine import Conflict, Database
from vimark.server.store.schema import VEHICLE_READ, MarkRow, VehicleRow

_CHANGE_LOG_LOCK = 0x76696D61  # "vima": the advisory lock that orders change-log ids on PostgreSQL
_ISSUE_GROUP_MAX = 64  # Issues per group transaction: bounds its statement sizes and its last caller's wait


def log_changes(driver: Driver, c: Any, vehicle_ids: Sequence[int], revoked_serial: int | None = None) -> list[int]:
    """The last statement of every write, on its transaction's driver cursor `c`: take the
    change-log lock, then append one row per vehicle. Returns their ids, in the order of `vehicle_ids`."""
    if not vehicle_ids:
        return []
    now = int(dt.datetime.now(dt.UTC).timestamp())
    values = [{"vehicle_id": v, "revoked_serial": revoked_serial, "created_at": now} for v in vehicle_ids]
    if driver.is_sqlite:  # the only writer (BEGIN IMMEDIATE): the next ids are ours, and in commit order
        c.execute(schema.LAST_CHANGE_ID)
        first = c.fetchone()[0] + 1
        ids = list(range(first, first + len(values)))
        c.executemany(
            schema.INSERT_CHANGE,
            [mapping.row(schema.CHANGE_COLUMNS, {**v, "id": i}) for v, i in zip(values, ids, strict=True)],
        )
        return ids
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
            return ids


@dataclass(frozen=True)
class IssueJob:
    """One Issue waiting for its group's transaction."""

    request_id: str
    plate_type: str
    plate_number: str
    decide: Callable[[VehicleRecord, MarkRecord | None], MarkPlan]
    sign: Callable[[int, VehicleRecord, MarkPlan], tuple[str, int]]


IssueResult = tuple[MarkRecord, bool, int | None]  # (mark, replayed, change id or None for a replay)
_IssueOutcome = IssueResult | BaseException  # or the exception its caller gets


class Writes:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._driver = db.driver
        # Concurrent Issues share one transaction and one commit (one fsync): see `issue`.
        self._issues: GroupCommitter[IssueJob, IssueResult] = GroupCommitter(
            self._issue_group, max_batch=_ISSUE_GROUP_MAX
        )

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
        if not events:
            return
        rows = [mapping.audit_row(e) for e in events]
        try:
            with self._db.driver_cursor(write=True) as c:
                c.executemany(self._driver.sql(schema.INSERT_AUDIT), rows)
        except self._driver.DatabaseError as exc:  # anything but OperationalError, which the guard made Unavailable
            raise VimarkError(f"audit events refused by the database: {exc}", reason="AUDIT_WRITE_FAILED") from exc

    # -- issuance ----------------------------------------------------------------------------
    def issue(self, job: IssueJob) -> IssueResult:
        return self._issues.submit(job)

    def _issue_group(self, jobs: Sequence[IssueJob]) -> list[_IssueOutcome]:
        for attempt in range(3):
            try:
                return self._issue_group_once(jobs)
            except Conflict:
                # Two groups met on the same rows (another server): nothing was written; run again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _issue_group_once(self, jobs: Sequence[IssueJob]) -> list[_IssueOutcome]:
        """One transaction for the whole group, in lock order:
        1. lock every vehicle of the group in one statement, in id order (as registry batches do),
           reading each one's current mark with it;
        2. read the group's earlier marks (replays), after the locks; then the group's serials;
        3. per command: rules, a serial, the signature (no database: a refusal or error is that
           command's outcome alone); then every new mark row, whole, in one batch under a
           SAVEPOINT (if a concurrent server took a request_id, that batch is undone and the
           marks go in one SAVEPOINT each, so only that command is affected);
        4. the vehicles' new current marks, then the change-log rows (change-log lock last);
        5. commit; only then is any outcome returned."""
        driver = self._driver
        day = driver.day_in
        outcomes: list[_IssueOutcome | None] = [None] * len(jobs)  # every one is set before the commit
        with self._db.driver_cursor(write=True) as c:
            # 1. Both plate columns by IN (the plate index serves it); other pairs are dropped below.
            types = sorted({j.plate_type for j in jobs})
            numbers = sorted({j.plate_number for j in jobs})
            query = schema.ISSUE_VEHICLES.format(
                types=schema.placeholders(len(types)), numbers=schema.placeholders(len(numbers))
            )
            c.execute(driver.sql(query if driver.is_sqlite else query + schema.LOCK_VEHICLES), [*types, *numbers])
            vehicles: dict[tuple[str, str], VehicleRecord] = {}
            current: dict[int, MarkRecord] = {}
            width = mapping.VEHICLE_WIDTH
            for r in c.fetchall():
                vehicle = mapping.vehicle(r, day)
                vehicles[(vehicle.plate_type, vehicle.plate_number)] = vehicle
                if r[width] is not None:  # the joined mark's serial
                    current[r[width]] = mapping.mark(r[width:], day)
            # 2. Read after the row locks: a concurrent retry waited for the first attempt to
            # commit, and replays its mark instead of judging the rules a second time.
            marks = {m.request_id: m for m in self._marks_by_request_id(c, {j.request_id for j in jobs})}
            serials = self._allocate_serials(c, len(jobs))
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
                row = mapping.row(
                    schema.MARK_COLUMNS,
                    {
                        "serial": serial,
                        "request_id": job.request_id,
                        "vehicle_id": vehicle.vehicle_id,
                        "valid_until": plan.valid_until,
                        "reason": plan.reason,
                        "issued_at": issued_at,
                        "valid_from": driver.day_out(plan.valid_from),
                        "inspected_on": driver.day_out(plan.inspected_on),
                        "station_id": plan.station_id,
                        "key_id": key_id,
                        "qr_text": qr_text,
                        "revoked": False,
                        "revoked_reason": "",
                    },
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
            stored = self._insert_marks(c, [row for _, _, row in new])
            issued: list[tuple[int, MarkRecord]] = []
            for (i, mark, _), error in zip(new, stored, strict=True):
                if error is None:
                    issued.append((i, mark))
                    continue
                # Another server committed this request_id after step 2 (the insert waited for
                # it): answer with its mark, as a retry would. The vehicle keeps its state.
                earlier = self._marks_by_request_id(c, {mark.request_id})
                outcomes[i] = (earlier[0], True, None) if earlier else Unavailable(f"mark not stored: {error}")
            if issued:
                # 4. Each vehicle's last new mark in this group is its current one.
                final = {m.vehicle_id: (m.serial, m.valid_until) for _, m in issued}
                c.executemany(
                    driver.sql(schema.SET_CURRENT_MARK),
                    [(valid_until, serial, vehicle_id) for vehicle_id, (serial, valid_until) in sorted(final.items())],
                )
                change_ids = log_changes(driver, c, [m.vehicle_id for _, m in issued])
                for (i, mark), change_id in zip(issued, change_ids, strict=True):
                    outcomes[i] = (mark, False, change_id)
        assert all(outcome is not None for outcome in outcomes)
        return cast("list[_IssueOutcome]", outcomes)  # 5. committed

    def _marks_by_request_id(self, c: Any, request_ids: set[str]) -> list[MarkRecord]:
        query = schema.MARKS_BY_REQUEST_ID.format(ids=schema.placeholders(len(request_ids)))
        c.execute(self._driver.sql(query), sorted(request_ids))
        return [mapping.mark(r, self._driver.day_in) for r in c.fetchall()]

    def _allocate_serials(self, c: Any, n: int) -> Iterator[int]:
        """n new mark serials, so a mark is signed before it is inserted (one row write, not two)."""
        if self._driver.is_sqlite:  # the only writer (BEGIN IMMEDIATE): the next rowids are ours
            c.execute(schema.LAST_SERIAL)
            top = c.fetchone()[0]
            return iter(range(top + 1, top + 1 + n))
        c.execute(self._driver.sql(schema.NEXT_SERIALS), [n])
        return iter([r[0] for r in c.fetchall()])

    def _insert_marks(self, c: Any, rows: list[tuple[Any, ...]]) -> list[Exception | None]:
        """Insert mark rows: all in one batch, or, if that breaks a constraint (a request_id a
        concurrent server committed), each in its own SAVEPOINT. Returns each row's error or None."""
        if not rows:
            return []
        insert_mark = self._driver.sql(schema.INSERT_MARK)
        try:
            c.execute("SAVEPOINT issue_marks")
            c.executemany(insert_mark, rows)
            c.execute("RELEASE SAVEPOINT issue_marks")
            return [None] * len(rows)
        except self._driver.IntegrityError:
            c.execute("ROLLBACK TO SAVEPOINT issue_marks")
        errors: list[Exception | None] = []
        for row in rows:
            try:
                c.execute("SAVEPOINT issue_mark")
                c.execute(insert_mark, row)
                c.execute("RELEASE SAVEPOINT issue_mark")
                errors.append(None)
            except self._driver.IntegrityError as exc:
                c.execute("ROLLBACK TO SAVEPOINT issue_mark")
                errors.append(exc)
        return errors
