"""The database connection: the engine and its SQLite hooks, transactions, the failure guard, the
SQLite writer lock and migrations.

Every transaction of the store is opened here (`Database.write`, `Database.read`, and the driver
path's `Database.driver_cursor`), inside the guard, so no SQLAlchemy or driver exception leaks
out of the store: a database that does not answer is `Unavailable` (and the next calls fail
fast), a lost race between writers is `Conflict` (the caller may run the transaction again)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from vimark.client.errors import Unavailable
from vimark.server.store.driver import Driver

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
FAIL_FAST_SECONDS = 1.0  # after the database failed to answer, how long calls fail at once
SQLITE_AUTOCHECKPOINT = 1000  # pages: SQLite's default, which the store's connections keep (bulk_write aside)
_CONFLICT_STATES = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure
_MIGRATION_LOCK = 0x76696D6D  # "vimm": serialises schema migrations of servers starting together
CHANGES_CHANNEL = "vimark_changes"  # what writes.log_changes NOTIFYs on PostgreSQL, with the highest change id
_LISTEN_RETRY_FIRST = 0.5  # seconds before the change listener reconnects after a failure; doubling...
_LISTEN_RETRY_MAX = 30.0  # ...up to this


class Conflict(Unavailable):
    """A transaction lost a race with another writer; running it again is safe."""


class Database:
    """The engine for `url` (sqlite:///FILE or postgresql+psycopg://...) and its transactions."""

    def __init__(self, url: str, *, connect_timeout: float = 2.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._writer_lock: Path | None = None
        self._turn = threading.local()  # .held: this thread holds the writer turn
        self._connect_timeout = connect_timeout
        if self.is_sqlite:
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
            database = self.engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                self._writer_lock = Path(database + "-writer.lock")
                _create_private(Path(database))
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
                connect_args=self._connect_args,
            )
        self.driver = Driver(self.engine.dialect.loaded_dbapi, is_sqlite=self.is_sqlite)
        self.changes = ChangeListener(self)
        self._unreachable_until = 0.0  # monotonic time before which calls fail fast (see guard)
        self._unreachable_reason = ""

    @property
    def _connect_args(self) -> dict[str, Any]:
        """PostgreSQL's connection settings: the pool's, and the change listener's."""
        return {
            "connect_timeout": max(2, int(self._connect_timeout)),
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,  # ms
            # An acknowledged write must survive a crash even where the server's default
            # was relaxed for speed.
            "options": "-c synchronous_commit=on",
        }

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.guard(), self.engine.begin() as conn:
            if not self.is_sqlite:  # replicas starting together: one migrates, the others wait
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def close(self) -> None:
        self.changes.close()
        self.engine.dispose()

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite, after this process's turn on the
        writer lock), committed on leaving: the commit has returned before the caller goes on."""
        with self.guard(), self.writer_turn(), self._connection() as conn:
            conn = conn.execution_options(vimark_write=True)
            transaction = conn.begin()
            try:
                yield conn
            except self.driver.OperationalError:
                raise  # no rollback: `_connection` discards the connection
            except BaseException:
                transaction.rollback()
                raise
            transaction.commit()

    @contextmanager
    def read(self, *, consistent: bool = False) -> Iterator[Connection]:
        """A connection to read on. `consistent`: one transaction, one snapshot of the whole
        database (REPEATABLE READ on PostgreSQL; a read transaction on SQLite's WAL)."""
        with self.guard(), self._connection() as conn:
            if not consistent:
                yield conn
                return
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def driver_cursor(self, *, write: bool = False) -> Iterator[Any]:
        """A driver cursor on a pooled connection of its own, for the driver path's own
        transactions (driver.py), which skip SQLAlchemy's Connection as they skip its statements
        (on SQLite, 17 µs a write transaction here against 41 µs through `write`; 8 against 13 µs
        a read). With `write`, one transaction as `write` opens one, committed on leaving."""
        with self.guard(), self.writer_turn() if write else nullcontext():
            raw = self.engine.raw_connection()  # the pool pings it first (pool_pre_ping)
            try:
                c = raw.cursor()
                if write and self.is_sqlite:
                    c.execute("BEGIN IMMEDIATE")
                yield c
                if write:
                    raw.commit()
            except BaseException as exc:
                if isinstance(exc, self.driver.OperationalError):
                    raw.invalidate()  # maybe a dead connection: never roll back on it nor hand it out again
                else:
                    raw.rollback()
                raise
            finally:
                raw.close()  # back to the pool, which rolls back whatever a read left open

    @contextmanager
    def write_without_checkpoint(self) -> Iterator[Any]:
        """`driver_cursor(write=True)`, committed durably (synchronous=FULL) but without the WAL
        checkpoint SQLite would run inside the commit, under the writer lock: the caller runs
        `checkpoint()` once it has let go of the lock. On PostgreSQL, `driver_cursor(write=True)`."""
        with self.driver_cursor(write=True) as c:
            yield c
            if self.is_sqlite:
                c.execute("PRAGMA wal_autocheckpoint = 0")
                try:
                    c.execute("COMMIT")
                finally:
                    c.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT}")

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages back into the SQLite file: PASSIVE, so it waits for no
        writer, and no writer for it. Nothing to do on PostgreSQL. Not behind `guard`: a failed
        checkpoint raises the driver's error to its caller and makes no other call fail fast."""
        if not self.is_sqlite:
            return
        raw = self.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            raw.close()

    @contextmanager
    def bulk_write(self) -> Iterator[Any]:
        """A batch that dirties thousands of pages (the registry import, a backfill), checkpointed
        at once after its commit: copying the batch's pages back into the database file inside
        the commit held the write lock two to three times as long as the batch itself (measured
        at 1 M vehicles)."""
        with self.write_without_checkpoint() as c:
            yield c
        with self.guard():
            self.checkpoint()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection (the pool pings it first). A driver cursor's OperationalError
        (`driver.cursor_in`) is one SQLAlchemy did not see: the connection may be dead, so it is
        discarded, never rolled back (a rollback to a vanished peer would wait for it) nor
        handed out again."""
        with self.engine.connect() as conn:
            try:
                yield conn
            except self.driver.OperationalError:
                conn.invalidate()
                raise

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Translate database failures at the boundary: nothing SQLAlchemy or the driver raises
        leaks out as such.

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
                raise Conflict(f"concurrent writers collided: {exc.orig}") from exc
            raise self._unreachable(exc.orig) from exc
        except self.driver.OperationalError as exc:  # from a driver cursor (driver.py)
            if getattr(exc, "sqlstate", None) in _CONFLICT_STATES:
                raise Conflict(f"concurrent writers collided: {exc}") from exc
            raise self._unreachable(exc) from exc

    def _unreachable(self, cause: object) -> Unavailable:
        self._unreachable_reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        self._unreachable_until = time.monotonic() + FAIL_FAST_SECONDS
        return Unavailable(f"database unavailable: {cause}")

    @contextmanager
    def writer_turn(self) -> Iterator[None]:
        """On a SQLite file, writers take turns on an flock beside it before BEGIN IMMEDIATE.

        SQLite admits one writer and makes the others poll with growing sleeps (its busy handler,
        up to 100 ms a nap): with `serve --workers 2` on one file that put an Issue's p99 over a
        second (load.bench issue_sqlite). A blocked flock wakes as soon as the lock is released,
        and the kernel drops it with the process, even on SIGKILL. Each turn opens its own file
        description, so threads of one process queue too. A thread that holds the turn may open
        its transaction inside it (the Issue group commit waits for its turn before it gathers its
        group). The busy timeout stays for writers that are not vimark's."""
        if self._writer_lock is None or getattr(self._turn, "held", False):
            yield
            return
        try:
            fd = os.open(self._writer_lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise Unavailable(f"cannot open the SQLite writer lock {self._writer_lock}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # releases the GIL while it waits
            self._turn.held = True
            try:
                yield
            finally:
                self._turn.held = False
        finally:
            os.close(fd)  # closing the only descriptor releases the lock


class ChangeListener:
    """Wake a replica as soon as the change log grows, instead of at its next poll.

    On PostgreSQL: one dedicated connection (not the pool's), in autocommit, `LISTEN
    vimark_changes`; every change-log write NOTIFYs it in its own transaction (writes.log_changes),
    so a notification means "committed". Polling stays the mechanism on SQLite and the fallback
    everywhere: `wait` never raises, and a lost connection is dropped and reconnected on a later
    call, after a pause that doubles from _LISTEN_RETRY_FIRST to _LISTEN_RETRY_MAX seconds."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Any = None
        self._lock = threading.Lock()  # one waiter on the connection at a time; close() waits for it
        self._closed = False
        self._retry_at = 0.0
        self._backoff = _LISTEN_RETRY_FIRST

    def wait(self, timeout: float) -> bool:
        """Up to `timeout` seconds: True as soon as a change was committed (or may have been: the
        listener has just been (re)connected, so changes made while nobody listened are caught up
        at once), False at the timeout, and at once-per-timeout on SQLite, after close(), or while
        the database is away (the call then sleeps out its timeout, so a caller's loop never spins)."""
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        if not self._db.is_sqlite and not self._closed:
            with self._lock:
                if not self._closed:
                    if self._conn is None and time.monotonic() >= self._retry_at and self._connect():
                        return True
                    if self._conn is not None:
                        try:
                            # Each generator runs to its end: it holds the connection's lock until then.
                            if not list(self._conn.notifies(timeout=timeout, stop_after=1)):
                                return False
                            list(self._conn.notifies(timeout=0))  # drain: one wake-up covers them all
                            return True
                        except Exception as exc:  # the driver's errors, or a closed connection
                            self._drop(exc)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        return False

    def _connect(self) -> bool:
        dbapi = self._db.engine.dialect.loaded_dbapi
        cargs, cparams = self._db.engine.dialect.create_connect_args(self._db.engine.url)
        try:
            conn = dbapi.connect(*cargs, **{**cparams, **self._db._connect_args}, autocommit=True)
        except Exception as exc:
            self._failed(exc)
            return False
        try:
            conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        except Exception as exc:
            conn.close()
            self._failed(exc)
            return False
        if self._backoff > _LISTEN_RETRY_FIRST:
            log.info("change listener connected again: replicas hear changes at once")
        self._conn, self._backoff = conn, _LISTEN_RETRY_FIRST
        return True

    def _drop(self, exc: BaseException) -> None:
        try:
            self._conn.close()
        except Exception:
            pass
        self._conn = None
        self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if self._backoff == _LISTEN_RETRY_FIRST:  # once an outage, not once a retry
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("change listener lost (%s); polling the change log until it reconnects", reason)
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _LISTEN_RETRY_MAX)

    def close(self) -> None:
        self._closed = True
        acquired = self._lock.acquire(timeout=5)  # a waiter leaves within its timeout
        try:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
                self._conn = None
        finally:
            if acquired:
                self._lock.release()


def _create_private(database: Path) -> None:
    """Create the SQLite file, empty, readable by its owner only, if it does not exist yet: it
    holds VINs and the audit trail. SQLite gives its -wal and -shm files the main file's mode. A
    file that exists keeps its mode (the operator's choice); a failure here is left to SQLite to
    report on first use, as it would have been."""
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass


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
