"""The store: vehicles, marks, the change log and the audit log in one SQL database (SQLite file
by default, PostgreSQL in production). The only package that imports SQLAlchemy or a driver.

Split by job, as Boulder's storage authority is:
    api.py          Store, the one public entry point
    engine.py       the engine, SQLite hooks, transactions, the failure guard, the SQLite
                    writer lock, migrations (server/migrations)
    schema.py       the tables, each column defined once, and every statement derived from them
    mapping.py      rows <-> records: one mapper per record type
    writes.py       registry upserts, status, revocation, audit appends and pruning, and the
                    one change-log writer every write ends with
    issuance.py     Issue (group commit): answered requests, grants, copies
    reads.py        marks, the index's snapshot and change-log tail, counts, audit reads, the
                    audit chain's verification
    audit_chain.py  the audit log's hash chain: an event's canonical bytes and one link
    driver.py       the few hot statements sent to the DB-API driver directly, and why
    preflight.py    before a server starts: is the database URL usable as given?
"""

from vimark.server.store.api import Store
from vimark.server.store.engine import FAIL_FAST_SECONDS, MIGRATIONS
from vimark.server.store.preflight import check_database_url, displayed
from vimark.server.store.schema import (
    AuditAnchorRow,
    AuditRow,
    Base,
    ChangeRow,
    IssueRequestRow,
    MarkRow,
    VehicleRow,
)

__all__ = [
    "FAIL_FAST_SECONDS",
    "MIGRATIONS",
    "AuditAnchorRow",
    "AuditRow",
    "Base",
    "ChangeRow",
    "IssueRequestRow",
    "MarkRow",
    "Store",
    "VehicleRow",
    "check_database_url",
    "displayed",
]
