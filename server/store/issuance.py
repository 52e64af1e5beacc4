"""Issue, group-committed: requests, grants and copies.

Concurrent calls share one transaction (`Issuance.issue`), which locks all its vehicles in one
statement in id order, writes every answered request, every new mark and every re-signed copy,
then logs every new mark's change (`writes.log_changes`, the change-log lock last); so the lock
order of writes.py holds for a group as for a single write. A request is answered once: its row
in issue_requests (the mark answered, the digest of its parameters) is what a retry finds,
whether it was a grant or a copy. The group's statements go to the driver directly (driver.py
says why).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from vimark.client.errors import InternalError, InvalidArgument, NotFound, Unavailable
from vimark.server.group_commit import GroupCommitter
from vimark.server.records import CopyPlan, MarkPlan, MarkRecord, VehicleRecord
from vimark.server.store import mapping, schema
from vimark.server.store.driver import Driver
from vimark.server.store.engine import Conflict, Database
from vimark.server.store.writes import log_changes

log = logging.getLogger("vimark.server")

_ISSUE_GROUP_MAX = 64  # Issues per group transaction: bounds its statement sizes and its last caller's wait
# Groups between WAL checkpoints. A group dirties a few pages per Issue (its vehicles, marks,
# requests and change-log rows): 16 groups of about 10 Issues are near SQLite's own rhythm of
# 1,000 pages, but the copy runs after the writer lock is let go, not inside a commit that holds it.
_GROUPS_PER_CHECKPOINT = 16


@dataclass(frozen=True)
class IssueJob:
    """One Issue waiting for its group's transaction."""

    request_id: str
    plate_type: str
    plate_number: str
    decide: Callable[[VehicleRecord, MarkRecord | None], MarkPlan | CopyPlan]
    sign: Callable[[int, VehicleRecord, MarkPlan | MarkRecord], tuple[str, int]]
    digest: str = ""


# (mark, replayed, change id or None when nothing was made current, the request's stored digest)
IssueResult = tuple[MarkRecord, bool, int | None, str]
_IssueOutcome = IssueResult | BaseException  # or the exception its caller gets


@dataclass
class _GroupPlan:
    """What step 3 of an Issue group decided: each command's outcome (a grant's change id is
    filled in step 4) and the rows that make them so."""

    outcomes: list[_IssueOutcome | None]
    requests: list[tuple[Any, ...]] = field(default_factory=list)  # issue_requests rows, request_id order
    marks: list[tuple[Any, ...]] = field(default_factory=list)  # new mark rows, whole
    resigned: list[tuple[str, int, int]] = field(default_factory=list)  # (qr_text, key_id, serial)
    granted: list[tuple[int, MarkRecord]] = field(default_factory=list)  # (job position, new mark)


class Issuance:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._driver = db.driver
        # Concurrent Issues share one transaction and one commit (one fsync): see `issue`.
        self._issues: GroupCommitter[IssueJob, IssueResult] = GroupCommitter(
            self._issue_group, max_batch=_ISSUE_GROUP_MAX, turn=db.writer_turn
        )
        self._groups_since_checkpoint = 0
        self._checkpointing = threading.Lock()

    def issue(self, job: IssueJob) -> IssueResult:
        try:
            return self._issues.submit(job)
        finally:
            self._checkpoint_when_due()

    def _checkpoint_when_due(self) -> None:
        """The WAL checkpoint the group commits skip, by one caller at a time, after its answer is
        committed: a failure here is logged, never the Issue's (its mark is stored)."""
        if self._groups_since_checkpoint < _GROUPS_PER_CHECKPOINT or not self._checkpointing.acquire(blocking=False):
            return
        try:
            self._groups_since_checkpoint = 0
            self._db.checkpoint()
        except Exception as exc:  # whatever the driver says: the Issues are committed
            log.warning("WAL checkpoint after Issue groups failed (tried again after the next groups): %s", exc)
        finally:
            self._checkpointing.release()

    def _issue_group(self, jobs: Sequence[IssueJob]) -> list[_IssueOutcome]:
        self._groups_since_checkpoint += 1
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
        2. read the group's requests answered before (replays), after the locks; then the
           group's serials;
        3. per command: rules, a serial, the signature (no database: a refusal or error is that
           command's outcome alone); then, under one SAVEPOINT, every request row, every new
           mark row (whole) and every re-signed copy, each kind in one batch. If a concurrent
           server committed one of these request_ids (or, before issue_requests, a mark with it)
           after step 2, the SAVEPOINT is undone and step 3 runs again with those commands
           answered as replays: only they are affected;
        4. the vehicles' new current marks, then the change-log rows (change-log lock last);
        5. commit; only then is any outcome returned."""
        driver = self._driver
        day = driver.day_in
        with self._db.write_without_checkpoint() as c:  # checkpointed outside the writer lock: see `issue`
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
            if not driver.is_sqlite:  # 1b. the current marks as committed now that the vehicles are ours
                wanted = sorted({v.current_serial for v in vehicles.values() if v.current_serial})
                current = {}
                if wanted:
                    c.execute(driver.sql(schema.CURRENT_MARKS.format(serials=schema.placeholders(len(wanted)))), wanted)
                    current = {r[0]: mapping.mark(r, day) for r in c.fetchall()}
            # 2. Read after the row locks: a concurrent retry waited for the first attempt to
            # commit, and replays its answer instead of judging the rules a second time.
            answered = self._requests_by_id(c, {j.request_id for j in jobs})
            serials = self._allocate_serials(c, len(jobs))
            now = time.time()
            # 3. (Again, after a lost race: the plan is pure; the database is back at the SAVEPOINT.)
            for _ in range(len(jobs) + 1):
                plan = self._plan_group(jobs, vehicles, current, answered, serials, now)
                if not plan.requests:
                    break
                c.execute("SAVEPOINT issue_writes")
                try:
                    c.executemany(driver.sql(schema.INSERT_REQUEST), plan.requests)
                    if plan.marks:
                        c.executemany(driver.sql(schema.INSERT_SIGNED_MARK), plan.marks)
                    if plan.resigned:
                        c.executemany(driver.sql(schema.RESIGN_MARK), plan.resigned)
                    c.execute("RELEASE SAVEPOINT issue_writes")
                    break
                except driver.IntegrityError as exc:
                    c.execute("ROLLBACK TO SAVEPOINT issue_writes")
                    # The insert waited for the concurrent server's commit: its rows are readable now.
                    taken = self._taken(c, [r[0] for r in plan.requests])
                    if not taken.keys() - answered.keys():  # not a request_id taken: nothing to learn
                        # Everything in the savepoint was undone: copies and re-signs as well as grants.
                        written = {r[0] for r in plan.requests}
                        return [
                            Unavailable(f"mark not stored: {exc}") if o is None or job.request_id in written else o
                            for job, o in zip(jobs, plan.outcomes, strict=True)
                        ]
                    answered.update(taken)
            else:
                raise AssertionError("each pass answers one more command as a replay")
            outcomes = plan.outcomes
            if plan.granted:
                # 4. Each vehicle's last new mark in this group is its current one.
                final = {m.vehicle_id: (m.serial, m.valid_until) for _, m in plan.granted}
                c.executemany(
                    driver.sql(schema.SET_CURRENT_MARK),
                    [(valid_until, serial, vehicle_id) for vehicle_id, (serial, valid_until) in sorted(final.items())],
                )
                change_ids = log_changes(driver, c, [m.vehicle_id for _, m in plan.granted])
                for (i, mark), change_id in zip(plan.granted, change_ids, strict=True):
                    outcomes[i] = (mark, False, change_id, jobs[i].digest)
        assert all(outcome is not None for outcome in outcomes)
        return cast("list[_IssueOutcome]", outcomes)  # 5. committed

    def _plan_group(
        self,
        jobs: Sequence[IssueJob],
        vehicles_before: dict[tuple[str, str], VehicleRecord],
        current_before: dict[int, MarkRecord],
        answered_before: dict[str, tuple[MarkRecord, str]],
        serials: Sequence[int],
        now: float,
    ) -> _GroupPlan:
        """Step 3 without the database: each command's rules, serial and signature, and its rows."""
        driver = self._driver
        plan = _GroupPlan(outcomes=[None] * len(jobs))
        vehicles = dict(vehicles_before)
        current = dict(current_before)
        answered = dict(answered_before)  # request_id -> (its mark as answered, its digest)
        unused = iter(serials)
        # In request_id order: concurrent groups insert (and wait on) request_ids in one order.
        for i in sorted(range(len(jobs)), key=lambda k: jobs[k].request_id):
            job = jobs[i]
            if job.request_id in answered:  # committed earlier, or earlier in this group
                mark, digest = answered[job.request_id]
                plan.outcomes[i] = (mark, True, None, digest)
                continue
            vehicle = vehicles.get((job.plate_type, job.plate_number))
            if vehicle is None:
                plan.outcomes[i] = NotFound(f"no vehicle {job.plate_number} with plate type {job.plate_type}")
                continue
            was = current.get(vehicle.current_serial)
            try:
                decided = job.decide(vehicle, was)
                if isinstance(decided, CopyPlan):
                    # A copy of the current mark: no new mark, nothing made current, no change-log row.
                    if was is None:
                        raise InternalError(f"a copy of {vehicle.plate_number}'s mark was decided, but it has none")
                    mark = was
                    if decided.resign:
                        qr_text, key_id = job.sign(was.serial, vehicle, was)
                        mark = replace(was, qr_text=qr_text, key_id=key_id)
                        plan.resigned.append((qr_text, key_id, was.serial))
                        current[was.serial] = mark
                    plan.outcomes[i] = (mark, False, None, job.digest)
                else:
                    _check_widths(decided)
                    serial = next(unused)
                    qr_text, key_id = job.sign(serial, vehicle, decided)
                    mark = self._granted(job, vehicle, decided, serial, qr_text, key_id)
                    plan.marks.append(_mark_row(driver, mark, decided))
                    plan.granted.append((i, mark))
                    current[serial] = mark
                    vehicles[(job.plate_type, job.plate_number)] = replace(
                        vehicle, valid_until=decided.valid_until, current_serial=serial
                    )
            except Exception as exc:  # a refusal (or a fault) of this command only
                plan.outcomes[i] = exc
                continue
            answered[job.request_id] = (mark, job.digest)
            plan.requests.append(
                mapping.row(
                    schema.REQUEST_COLUMNS,
                    {"request_id": job.request_id, "serial": mark.serial, "digest": job.digest, "at": now},
                )
            )
        return plan

    @staticmethod
    def _granted(
        job: IssueJob, vehicle: VehicleRecord, plan: MarkPlan, serial: int, qr_text: str, key_id: int
    ) -> MarkRecord:
        return MarkRecord(
            serial=serial,
            vehicle_id=vehicle.vehicle_id,
            plate_type=vehicle.plate_type,
            plate_number=vehicle.plate_number,
            vin=vehicle.vin,
            valid_until=plan.valid_until,
            reason=plan.reason,
            issued_at=dt.datetime.fromtimestamp(int(plan.issued_at.timestamp()), dt.UTC),  # stored to the second
            valid_from=plan.valid_from,
            key_id=key_id,
            qr_text=qr_text,
            request_id=job.request_id,
            revoked=False,
            issued_by=plan.issued_by,
            issuer_fingerprint=plan.issuer_fingerprint,
            station_id=plan.station_id,
        )

    def _requests_by_id(self, c: Any, request_ids: set[str]) -> dict[str, tuple[MarkRecord, str]]:
        """The requests answered before among `request_ids`: each one's mark as it now reads, and digest."""
        query = schema.REQUESTS_BY_ID.format(ids=schema.placeholders(len(request_ids)))
        c.execute(self._driver.sql(query), sorted(request_ids))
        return {r[0]: (mapping.mark(r[2:], self._driver.day_in), r[1]) for r in c.fetchall()}

    def _taken(self, c: Any, request_ids: list[str]) -> dict[str, tuple[MarkRecord, str]]:
        """Which of `request_ids` are answered now: by a request row, or by a mark a server of a
        version before issue_requests granted (digest unknown)."""
        taken = self._requests_by_id(c, set(request_ids))
        legacy = set(request_ids) - taken.keys()
        if legacy:
            taken.update((m.request_id, (m, "")) for m in self._marks_by_request_id(c, legacy))
        return taken

    def _marks_by_request_id(self, c: Any, request_ids: set[str]) -> list[MarkRecord]:
        query = schema.MARKS_BY_REQUEST_ID.format(ids=schema.placeholders(len(request_ids)))
        c.execute(self._driver.sql(query), sorted(request_ids))
        return [mapping.mark(r, self._driver.day_in) for r in c.fetchall()]

    def _allocate_serials(self, c: Any, n: int) -> list[int]:
        """n new mark serials, so a mark is signed before it is inserted (one row write, not two)."""
        if self._driver.is_sqlite:  # the only writer (BEGIN IMMEDIATE): the next rowids are ours
            c.execute(schema.LAST_SERIAL)
            top = c.fetchone()[0]
            return list(range(top + 1, top + 1 + n))
        c.execute(self._driver.sql(schema.NEXT_SERIALS), [n])
        return [r[0] for r in c.fetchall()]


def _check_widths(plan: MarkPlan) -> None:
    """A plan's texts must fit their columns: refused (this command only), never cut."""
    for name, width in schema.MARK_TEXT_WIDTHS.items():
        if len(getattr(plan, name)) > width:
            raise InvalidArgument(name, f"at most {width} characters")


def _mark_row(driver: Driver, mark: MarkRecord, plan: MarkPlan) -> tuple[Any, ...]:
    """A new mark's row, whole (`schema.INSERT_SIGNED_MARK`)."""
    return mapping.row(
        schema.SIGNED_MARK_COLUMNS,
        {
            "serial": mark.serial,
            "request_id": mark.request_id,
            "vehicle_id": mark.vehicle_id,
            "valid_until": mark.valid_until,
            "reason": mark.reason,
            "issued_at": int(mark.issued_at.timestamp()),
            "valid_from": driver.day_out(mark.valid_from),
            "inspected_on": driver.day_out(plan.inspected_on),
            "station_id": mark.station_id,
            "key_id": mark.key_id,
            "qr_text": mark.qr_text,
            "revoked": False,
            "revoked_reason": "",
            "issued_by": mark.issued_by,
            "issuer_fingerprint": mark.issuer_fingerprint,
            # What the QR text signs (the vehicle's plate and VIN when it was issued).
            "signed_plate_type": mark.plate_type,
            "signed_plate_number": mark.plate_number,
            "signed_vin": mark.vin,
        },
    )
