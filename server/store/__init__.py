"""The store: vehicles, marks, the change log and the audit log in one SQL database (SQLite file
by default, PostgreSQL in production). The only package that imports SQLAlchemy or a driver.

Split by job, as Boulder's storage authority is:
    api.py      Store, the one public entry point
    engine.py   the engine, SQLite hooks, transactions, the failure guard, the SQLite writer
                lock, migrations (server/migrations)
    schema.py   the tables, each column defined once, and every statement derived from them
    mapping.py  rows <-> records: one mapper per record type
    writes.py   registry upserts, status, revocation, Issue (group commit), audit appends, and
                the one change-log writer every write ends with
    reads.py    marks, the index's snapshot and change-log tail, counts, audit reads
    driver.py   the few hot statements sent to the DB-API driver directly, and why
"""

from vimark.server.store.api import Store
from vimark.server.store.engine import FAIL_FAST_SECONDS, MIGRATIONS
from vimark.server.store.schema import AuditRow, Base, ChangeRow, MarkRow, VehicleRow

__all__ = ["FAIL_FAST_SECONDS", "MIGRATIONS", "AuditRow", "Base", "ChangeRow", "MarkRow", "Store", "VehicleRow"]
