"""`Store`, vimark's database: the one public entry point of the store package.

It owns one `engine.Database` and hands each call to the part whose job it is, as Boulder's
storage authority does: `writes.Writes` (registry, status, revocation, audit appends and
pruning), `issuance.Issuance` (Issue, group-committed) and `reads.Reads` (marks, the index's
snapshot and change log, counts, audit reads and the chain's verification)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from sqlalchemy import Engine

from vimark.client.domain import Month
from vimark.client.errors import InvalidArgument
from vimark.server.records import (
    AuditEvent,
    Change,
    CopyPlan,
    MarkPlan,
    MarkRecord,
    VehicleColumns,
    VehicleRecord,
    VehicleSnapshot,
)
from vimark.server.store import schema
from vimark.server.store.backfill import Backfill
from vimark.server.store.bulk import Bulk, ImportResult
from vimark.server.store.engine import Database
from vimark.server.store.issuance import Issuance, IssueJob
from vimark.server.store.reads import Reads
from vimark.server.store.terminal import SignedPlate, StatusFacts, TerminalReads
from vimark.server.store.writes import Writes


class Store:
    """vimark's database. `url` is a SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://...

    Failures come out as vimark errors: `Unavailable` when the database does not answer (and for
    FAIL_FAST_SECONDS after, at once), `NotFound`, `InvalidArgument`."""

    def __init__(self, url: str, *, migrate: bool = True, connect_timeout: float = 2.0) -> None:
        self._db = Database(url, connect_timeout=connect_timeout)
        self.url = url
        self.is_sqlite = self._db.is_sqlite
        self.engine: Engine = self._db.engine
        self._reads = Reads(self._db)
        self._terminal = TerminalReads(self._db)
        self._writes = Writes(self._db)
        self._issuance = Issuance(self._db)
        self._backfill = Backfill(self._db)
        self._bulk = Bulk(self._db, self._writes)
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; servers starting together
        on PostgreSQL take turns)."""
        self._db.migrate()

    def close(self) -> None:
        self._db.close()

    # -- registry ----------------------------------------------------------------------------
    def upsert_vehicles(self, vehicles: Sequence[VehicleRecord]) -> tuple[int, int]:
        """Create or update by VIN (the durable identity), else by plate. Returns (created, updated).

        The registry's valid_until is applied only to a vehicle without a vimark mark: once
        vimark has issued, its own marks are the truth. A plate that now names another VIN (a
        plate reissued to a new vehicle) starts afresh: no mark, the registry's validity."""
        return self._writes.upsert_vehicles(vehicles)

    def import_vehicles(self, vehicles: Sequence[VehicleRecord]) -> ImportResult:
        """`upsert_vehicles` for the bulk feed: the same outcome, in one short transaction of bulk
        statements (store/bulk.py), durable on return; all or nothing. Returns created, updated and
        the change id of the batch's last change (0 when the batch went row by row: catch up fully)."""
        return self._bulk.import_vehicles(vehicles)

    def set_status(self, plate_type: str, plate_number: str, status_bits: int) -> VehicleRecord:
        """Replace a vehicle's status bits; returns the vehicle as it now reads."""
        return self._writes.set_status(plate_type, plate_number, status_bits)

    def revoke_mark(self, serial: int, reason: str) -> None:
        self._writes.revoke_mark(serial, reason)

    # -- issuance ----------------------------------------------------------------------------
    def issue(
        self,
        request_id: str,
        plate_type: str,
        plate_number: str,
        decide: Callable[[VehicleRecord, MarkRecord | None], MarkPlan | CopyPlan],
        sign: Callable[[int, VehicleRecord, MarkPlan | MarkRecord], tuple[str, int]],
        digest: str = "",
    ) -> tuple[MarkRecord, bool, int | None, str]:
        """Issue: `decide(vehicle, its current mark or None)` (rules), then, durable on return:

        - a `MarkPlan`: `sign(serial, vehicle, plan)`, insert the mark, make it current, log it;
        - a `CopyPlan`: answer with the current mark, nothing made current, nothing logged; with
          `resign`, `sign(its serial, vehicle, the mark)` and store the new QR text and key id.

        Either way the request is recorded (request_id, the mark answered, `digest`: the
        request's parameters as the caller hashed them, at most 64 characters).

        Returns (mark, replayed, change id, digest). A request_id answered before returns that
        mark as it now reads, replayed=True, no change id and the digest stored with it, and
        writes nothing: comparing digests (and vehicles) is the caller's. A grant returns the
        change id that made it current; a copy None. Concurrent calls are group-committed: each
        runs in isolation (its refusal or error is its own) but they share one transaction."""
        if len(digest) > schema.REQUEST_DIGEST_WIDTH:
            raise InvalidArgument("digest", f"at most {schema.REQUEST_DIGEST_WIDTH} characters")
        return self._issuance.issue(IssueJob(request_id, plate_type, plate_number, decide, sign, digest))

    @property
    def backfill(self) -> Backfill:
        """Bulk first issuance (store/backfill.py): the registry read in id order or by plates,
        serials for marks about to be signed, and each batch of marks written in one transaction."""
        return self._backfill

    def mark_by_request_id(self, request_id: str) -> MarkRecord | None:
        """The mark the request was answered with (a new mark, or a copy of the current one)."""
        return self._reads.mark_by_request_id(request_id)

    def mark_by_serial(self, serial: int) -> MarkRecord | None:
        return self._reads.mark_by_serial(serial)

    # -- feeding the index -------------------------------------------------------------------
    def snapshot(self) -> tuple[int, list[VehicleRecord], set[int]]:
        """Everything the index needs, read in one consistent transaction:
        (last change id, every vehicle, every revoked serial)."""
        return self._reads.snapshot()

    def snapshot_chunks(self, chunk: int = 100_000) -> AbstractContextManager[VehicleSnapshot]:
        """What `snapshot` reads, in the same one consistent transaction, without a record per
        vehicle: `with store.snapshot_chunks() as s:` gives the last change id, the highest vehicle
        id, the revoked serials and `s.chunks`, the vehicles `chunk` at a time as columns of
        stored values (records.VehicleColumns), read as they are consumed, inside the `with`."""
        return self._reads.snapshot_chunks(chunk)

    def changes_since(self, last_id: int, limit: int = 5000) -> list[Change]:
        """The change-log rows after `last_id`, in id order, at most `limit`."""
        return self._reads.changes_since(last_id, limit)

    def change_columns_since(self, last_id: int, limit: int = 50_000) -> tuple[int, int, VehicleColumns, list[int]]:
        """The change log after `last_id` in bulk: (rows read, the last one's id, each vehicle
        changed once as it now reads, as columns; the serials revoked)."""
        return self._reads.change_columns_since(last_id, limit)

    def change_fingerprint(self, change_id: int) -> str:
        """What change `change_id` recorded ("" when the log has no such row): a checkpoint
        compares it, so a log rewritten since (a restore that lost changes) is noticed."""
        return self._reads.change_fingerprint(change_id)

    def change_log_span(self) -> tuple[int, int]:
        """(first, last) change id in the log; (0, 0) when it is empty."""
        return self._reads.change_log_span()

    def identity(self) -> str:
        """This database's random id (made once, by migration 0004)."""
        return self._reads.identity()

    def count_vehicles(self) -> int:
        return self._reads.count_vehicles()

    def status_facts(self, from_month: Month, hot_mask: int, signed_plate: SignedPlate) -> StatusFacts:
        """What police terminals' status snapshot is made of, in one consistent transaction:
        the class of every mark from the lowest serial within validity at `from_month` (or
        current) up, the vehicles whose status has a bit of `hot_mask`, and every revoked serial
        (store/terminal.py; `signed_plate` reads marks stored without their signed plate)."""
        return self._terminal.status_facts(from_month, hot_mask, signed_plate)

    # -- audit log ---------------------------------------------------------------------------
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Write a batch of audit events in one transaction, each chained to the one stored
        before it (store/audit_chain.py); events from several processes chain in id order."""
        self._writes.append_audit(events)

    def verify_audit_chain(self, page: int = 5000) -> tuple[int, str, int | None]:
        """Recompute the audit log's hash chain in id order, from where pruning left it, reading
        `page` events at a time in one snapshot. Returns (events checked, the head: the last
        event's stored chain, or the anchor's, id of the first event whose stored chain does not
        match, or None when all do)."""
        return self._reads.verify_audit_chain(page)

    def prune_audit(self, before: dt.datetime, through_id: int) -> int:
        """Delete, in one transaction, the oldest audit events: id <= through_id and time before
        `before` (timezone-aware), from the oldest on up to the first that is not before it, so the
        rest still chains. The chain's anchor moves to the last one deleted. Returns how many were
        deleted. How old is old enough is the caller's policy."""
        return self._writes.prune_audit(before, through_id)

    def list_audit_events(
        self,
        *,
        plate_number: str | None = None,
        caller_id: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        after_id: int = 0,
        limit: int,
    ) -> list[AuditEvent]:
        """Audit events with an id above `after_id` that match every filter given (`since`
        inclusive, `until` exclusive, both timezone-aware), in id order, at most `limit` of them;
        each with its `event_id`. To page on, ask again with `after_id` set to the last event's
        `event_id`: events that share a time are then neither repeated nor skipped."""
        return self._reads.list_audit_events(
            plate_number=plate_number, caller_id=caller_id, since=since, until=until, after_id=after_id, limit=limit
        )

    def audit_events(
        self,
        *,
        plate_number: str | None = None,
        caller_id: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """Audit events matching every filter given, oldest first (by time, then id), at most
        `limit` of them. Superseded by `list_audit_events`, which pages without gaps."""
        return self._reads.audit_events(plate_number=plate_number, caller_id=caller_id, since=since, limit=limit)

    # -- replicas hearing changes at once ----------------------------------------------------
    def wait_for_change(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a committed change to the change log: True as soon as
        one is heard (PostgreSQL: LISTEN on a dedicated connection; every change-log write NOTIFYs
        at its commit), False at the timeout. Never raises: with the database away, or on SQLite,
        it sleeps the timeout and returns False, and polling the log stays the mechanism."""
        return self._db.changes.wait(timeout)

    @property
    def notify_changes(self) -> bool:
        """Whether this store's change-log writes NOTIFY listeners (PostgreSQL; tests turn it off)."""
        return self._db.driver.notify_changes

    @notify_changes.setter
    def notify_changes(self, on: bool) -> None:
        self._db.driver.notify_changes = on and not self.is_sqlite
