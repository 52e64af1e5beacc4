"""Bulk first issuance (backfill): the store's side.

The server (server/backfill.py) reads the registry here (`scan`, `by_plates`), decides and signs
marks away from the database, and writes each batch in one transaction (`write`), in the lock
order of issuance.py: the batch's vehicles locked in id order and read again, then the marks,
their request rows, the vehicles' current marks, and the change-log rows last. A vehicle whose
row changed since it was read (it got a mark meanwhile, or another plate, VIN, status or
validity) is left out and said so; the rest commits. A batch is written whole or not at all.

Serials are in the signed body, so they are known before the transaction: on PostgreSQL taken
from the sequence (`reserve_serials`, never given twice); on SQLite, the only writer, the next
ones after those already handed out, checked in the transaction: if an Issue took one meanwhile
the batch is signed again there with free serials (`write`'s `resign`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from vimark.server.store import schema
from vimark.server.store.driver import Driver
from vimark.server.store.engine import CHANGES_CHANNEL, Database
from vimark.server.store.writes import _CHANGE_LOG_LOCK as CHANGE_LOG_LOCK
from vimark.server.store.writes import log_changes

# What a backfill reads of a vehicle, in `Candidate`'s field order.
_CANDIDATE = "id, plate_type, plate_number, vin, status_bits, valid_until, current_serial"
_SCAN = f"SELECT {_CANDIDATE} FROM vehicles WHERE id > ? ORDER BY id LIMIT ?"
_BY_PLATES = f"SELECT {_CANDIDATE} FROM vehicles WHERE plate_type IN ({{types}}) AND plate_number IN ({{numbers}})"
_BY_IDS = f"SELECT {_CANDIDATE} FROM vehicles WHERE id IN ({{ids}}) ORDER BY id"
_TAKEN_REQUESTS = (
    "SELECT request_id FROM marks WHERE request_id IN ({ids})"
    " UNION SELECT request_id FROM issue_requests WHERE request_id IN ({ids})"
)
_PLATES_PER_QUERY = 500  # plate pairs per lookup: bounds the statement's parameters
_WRITE_ATTEMPTS = 3


class Candidate(NamedTuple):
    """A vehicle as a backfill reads it: what it decides on, and what the mark will say. A
    tuple (not a dataclass) because a province makes millions: it is the row as read, and a
    row read again compares equal to it while the vehicle is unchanged."""

    vehicle_id: int
    plate_type: str
    plate_number: str
    vin: str
    status_bits: int
    valid_until: int | None  # Month
    current_serial: int  # 0: no mark


class NewMark(NamedTuple):
    """A signed mark waiting for its batch's transaction (a tuple, as Candidate: millions)."""

    vehicle: Candidate
    serial: int
    request_id: str
    qr_text: str
    key_id: int


@dataclass(frozen=True)
class BatchTerms:
    """What every mark of a batch shares."""

    reason: int  # IssueReason
    issued_at: int  # Unix seconds
    valid_from: dt.date
    issued_by: str  # "role/caller_id" of the operator's certificate
    issuer_fingerprint: str  # its SHA-256, hex ("" in development mode)
    digest: str  # the requests' digest (issue_requests.digest): a backfill by this caller


@dataclass(frozen=True)
class Written:
    """A batch's outcome, once committed: the marks written; the vehicles left out because they
    have a mark now (made meanwhile, or under the same request id) or because their record
    changed (or is gone); and the change id that makes the last written mark current (0: none)."""

    marks: list[NewMark]
    already_marked: list[Candidate]
    changed: list[Candidate]
    last_change_id: int


# PostgreSQL: the batch's vehicles' new current marks in one statement, and its change-log rows in
# one, the bulk form of writes.log_changes (as store/bulk.py's import does): ids assigned under
# the change-log lock, held to commit, in the order of the vehicles.
_PG_SET_CURRENT = (
    "UPDATE vehicles SET valid_until = u.valid_until, current_serial = u.serial"
    " FROM unnest(%s::bigint[], %s::integer[], %s::bigint[]) AS u(id, valid_until, serial) WHERE vehicles.id = u.id"
)
_PG_LOG = (
    "INSERT INTO change_log (vehicle_id, revoked_serial, created_at)"
    " SELECT t.id, NULL, %s FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(id, ord) ORDER BY t.ord RETURNING id"
)


def _copy(c: Any, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    with c.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _log_changes_pg(driver: Driver, c: Any, vehicle_ids: list[int]) -> int:
    """The batch's change-log rows (PostgreSQL); returns the last id."""
    c.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOG_LOCK,))
    c.execute(_PG_LOG, (int(time.time()), vehicle_ids))
    last = int(max(r[0] for r in c.fetchall()))
    if driver.notify_changes:  # replicas LISTENing wake at once (delivered at commit)
        c.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, str(last)))
    return last


# Signs marks again with other serials (same vehicles and terms, in order).
Resign = Callable[[list[NewMark], list[int]], list[NewMark]]


def _candidate(r: Sequence[Any]) -> Candidate:
    return Candidate(*r)


# The rows written, built by position (a dict per row costs more than the insert): checked here
# against the columns schema.py renders the statements from.
_MARK_ORDER = (
    "serial", "request_id", "vehicle_id", "valid_until", "reason", "issued_at", "valid_from", "inspected_on",
    "station_id", "key_id", "qr_text", "revoked", "revoked_reason", "issued_by", "issuer_fingerprint",
)  # fmt: skip
assert schema.SIGNED_MARK_COLUMNS == (*_MARK_ORDER, "signed_plate_type", "signed_plate_number", "signed_vin"), (
    "INSERT_SIGNED_MARK's columns changed: update _write_once's rows"
)
assert schema.REQUEST_COLUMNS == ("request_id", "serial", "digest", "at"), "INSERT_REQUEST's columns changed"


class Backfill:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._driver = db.driver
        self._handed_out = 0  # SQLite: the highest serial handed out to a batch not yet written

    def scan(self, after_id: int, limit: int) -> list[Candidate]:
        """Up to `limit` vehicles with an id above `after_id`, in id order."""
        with self._db.driver_cursor() as c:
            c.execute(self._driver.sql(_SCAN), [after_id, limit])
            return [_candidate(r) for r in c.fetchall()]

    def by_plates(self, plates: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Candidate]:
        """The vehicles with these (plate type, plate number) pairs, by pair; unknown ones absent."""
        found: dict[tuple[str, str], Candidate] = {}
        wanted = set(plates)
        with self._db.driver_cursor() as c:
            for start in range(0, len(plates), _PLATES_PER_QUERY):
                part = plates[start : start + _PLATES_PER_QUERY]
                types, numbers = sorted({t for t, _ in part}), sorted({n for _, n in part})
                query = _BY_PLATES.format(
                    types=schema.placeholders(len(types)), numbers=schema.placeholders(len(numbers))
                )
                c.execute(self._driver.sql(query), [*types, *numbers])
                for r in c.fetchall():
                    if (r[1], r[2]) in wanted:  # both columns by IN: other pairs come too
                        found[(r[1], r[2])] = _candidate(r)
        return found

    def reserve_serials(self, n: int) -> list[int]:
        """n serials for marks about to be signed. PostgreSQL: the sequence's, never given twice.
        SQLite: the next after every serial stored or handed out, checked again by `write`."""
        with self._db.driver_cursor() as c:
            if not self._driver.is_sqlite:
                c.execute(self._driver.sql(schema.NEXT_SERIALS), [n])
                return [r[0] for r in c.fetchall()]
            c.execute(schema.LAST_SERIAL)
            top = max(int(c.fetchone()[0]), self._handed_out)
        self._handed_out = top + n
        return list(range(top + 1, top + 1 + n))

    def write(self, marks: Sequence[NewMark], terms: BatchTerms, resign: Resign) -> Written:
        """One transaction: every mark of the batch whose vehicle still reads as it did and still
        has no mark, with its request row, the vehicle's new current mark and its change-log
        row. A request id found taken (a mark made under it by a concurrent backfill) leaves
        its vehicle out, and the rest is written again."""
        taken: set[str] = set()
        for attempt in range(_WRITE_ATTEMPTS):
            kept = [m for m in marks if m.request_id not in taken]
            try:
                return self._write_once(kept, terms, resign, [m.vehicle for m in marks if m.request_id in taken])
            except self._driver.IntegrityError:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
                taken |= self._taken([m.request_id for m in kept])
        raise AssertionError("unreachable")

    def _write_once(self, marks: list[NewMark], terms: BatchTerms, resign: Resign, taken: list[Candidate]) -> Written:
        driver = self._driver
        with self._db.bulk_write() as c:
            now: dict[int, Candidate] = {}
            if marks:
                # 1. The batch's vehicles, locked in id order, read again: leave out any that changed.
                ids = [m.vehicle.vehicle_id for m in marks]
                query = _BY_IDS.format(ids=schema.placeholders(len(ids)))
                c.execute(driver.sql(query if driver.is_sqlite else query + schema.LOCK_VEHICLES), ids)
                now = {r[0]: r for r in c.fetchall()}
            kept, already, changed = [], list(taken), []
            for m in marks:
                current = now.get(m.vehicle.vehicle_id)
                if current == m.vehicle:
                    kept.append(m)
                elif current is not None and current[-1]:  # its current_serial
                    already.append(m.vehicle)
                else:
                    changed.append(m.vehicle)
            # 2. SQLite: the serials must still be free (an Issue may have taken the next ones).
            if kept and driver.is_sqlite:
                c.execute(schema.LAST_SERIAL)
                top = int(c.fetchone()[0])
                if top >= kept[0].serial:
                    kept = resign(kept, list(range(top + 1, top + 1 + len(kept))))
                    self._handed_out = max(self._handed_out, kept[-1].serial)
            if not kept:
                return Written([], already, changed, 0)
            # 3. The marks, their request rows, the vehicles' current marks, the change log last.
            t = terms
            valid_from = driver.day_out(t.valid_from)
            marks_rows = [
                (m.serial, m.request_id, m.vehicle.vehicle_id, m.vehicle.valid_until, t.reason, t.issued_at,
                 valid_from, None, "", m.key_id, m.qr_text, False, "", t.issued_by, t.issuer_fingerprint,
                 m.vehicle.plate_type, m.vehicle.plate_number, m.vehicle.vin)  # + the plate and VIN signed
                for m in kept
            ]  # fmt: skip
            at = float(t.issued_at)
            requests = [(m.request_id, m.serial, t.digest, at) for m in kept]
            vehicle_ids = [m.vehicle.vehicle_id for m in kept]
            if driver.is_sqlite:
                c.executemany(schema.INSERT_SIGNED_MARK, marks_rows)
                c.executemany(schema.INSERT_REQUEST, requests)
                c.executemany(
                    schema.SET_CURRENT_MARK, [(m.vehicle.valid_until, m.serial, m.vehicle.vehicle_id) for m in kept]
                )
                last_change = max(log_changes(driver, c, vehicle_ids))
            else:  # a statement per row costs a round of the pipeline each: COPY and arrays instead
                _copy(c, "marks", schema.SIGNED_MARK_COLUMNS, marks_rows)
                _copy(c, "issue_requests", schema.REQUEST_COLUMNS, requests)
                c.execute(
                    _PG_SET_CURRENT, (vehicle_ids, [m.vehicle.valid_until for m in kept], [m.serial for m in kept])
                )
                last_change = _log_changes_pg(driver, c, vehicle_ids)
        return Written(kept, already, changed, last_change)  # committed

    def _taken(self, request_ids: list[str]) -> set[str]:
        """Which of these request ids name a mark already (a concurrent backfill's)."""
        taken: set[str] = set()
        with self._db.driver_cursor() as c:
            for start in range(0, len(request_ids), _PLATES_PER_QUERY):
                part = request_ids[start : start + _PLATES_PER_QUERY]
                query = _TAKEN_REQUESTS.format(ids=schema.placeholders(len(part)))
                c.execute(self._driver.sql(query), [*part, *part])
                taken |= {r[0] for r in c.fetchall()}
        return taken
