"""The driver path: the store's few statements that go to the DB-API driver (sqlite3, psycopg)
directly instead of through SQLAlchemy's statements, and what the driver needs to run them.

Everything else in the store is SQLAlchemy Core. These are the hot paths, each moved for a
measured reason:
- Issue's group transaction (`issuance.Issuance._issue_group_once`) and the change-log writer every
  write ends with (`writes.log_changes`): SQLAlchemy's work per statement (cache keys, IN-list
  expansion, result processing) was most of an Issue's time, and a group is one writer's
  critical section.
- The index's tail of the change log (measured as `reads.Reads.changes_since`; the index now
  reads it as columns, `change_columns_since`), which runs after every Issue group.
- The audit writer (`writes.Writes.append_audit`), which shares the GIL with Verify: with
  SQLAlchemy's per-row insert work Verify's p99 was 219 ms at 921/s offered, against 45.5 ms
  with auditing off (load/README.md, "Latency").

Measured again when the store became a package: CPU time of the calling thread per call
(`time.thread_time`, median of 30-300 calls; an Issue group rolled back, so no fsync is counted),
each driver statement against the same statement in SQLAlchemy Core; 2-core KVM guest shared
with other work, SQLite file with the store's settings (3 runs), PostgreSQL on 127.0.0.1 (4 runs,
which moved more; ranges):

    driver / SQLAlchemy Core                      SQLite            PostgreSQL
    one Issue group of 16, all its statements     0.28 / 1.1 ms     1.2-2.2 / 2.6-4.2 ms
    changes_since, 1 row                          0.02 / 0.2 ms     0.22-0.30 / 0.48-0.78 ms
    changes_since, 64 rows                        0.23 / 0.4 ms     0.39-0.70 / 0.62-0.89 ms
    append_audit, 500 events                      1.8 / 3.0 ms      5.8-8.7 / 6.5-11 ms (no clear gain)

The driver path's own transactions (`engine.Database.driver_cursor`: Issue groups, the audit
writer, the change-log tail) skip SQLAlchemy's Connection too. The other writes end with the
change-log writer on a driver cursor borrowed from their SQLAlchemy transaction (`cursor_in`),
so their rows and their change-log rows commit together. Statements are written once, in qmark
style, in schema.py; `Driver.sql` adapts them to the driver's placeholder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from sqlalchemy.engine import Connection


class Driver:
    """The driver's dialect: its placeholder, how a date is stored, and its exception classes (a
    driver cursor raises the driver's, not SQLAlchemy's)."""

    def __init__(self, dbapi: Any, *, is_sqlite: bool) -> None:
        self.is_sqlite = is_sqlite
        # PostgreSQL: the change-log writer NOTIFYs replicas (writes.log_changes); a test turns it off.
        self.notify_changes = not is_sqlite
        self.Error: type[Exception] = dbapi.Error
        self.OperationalError: type[Exception] = dbapi.OperationalError
        self.IntegrityError: type[Exception] = dbapi.IntegrityError
        self.DatabaseError: type[Exception] = dbapi.DatabaseError

    def sql(self, statement: str) -> str:
        # sqlite3 takes qmark parameters, psycopg format ones (no statement here contains a ? or a %).
        return statement if self.is_sqlite else statement.replace("?", "%s")

    def day_in(self, value: Any) -> dt.date:
        # SQLAlchemy stores a Date on SQLite as ISO text (YYYY-MM-DD); psycopg returns a date.
        return dt.date.fromisoformat(value) if self.is_sqlite else value  # type: ignore[no-any-return]

    def day_out(self, value: dt.date | None) -> Any:
        return value.isoformat() if self.is_sqlite and value is not None else value


@contextmanager
def cursor_in(conn: Connection) -> Iterator[Any]:
    """A driver cursor on `conn`'s connection, inside whatever transaction `conn` has begun."""
    with closing(conn.connection.driver_connection.cursor()) as c:  # type: ignore[union-attr]
        yield c
