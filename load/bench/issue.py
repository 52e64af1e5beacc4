"""The Issue benchmarks: durable Issue/s over gRPC (SQLite, PostgreSQL) against the raw rate of
durable one-row commits on the same storage.

Every call is a TRANSFER (a grant that carries the vehicle's validity onto a new mark and
supersedes the old one) from a `--role registration` server: each Issue writes a mark and a
change-log row. A re-download would only hand the current mark back and write nothing, so after
each run the marks written are counted, and a run that wrote fewer marks than it counted Issues
fails rather than report copies as writes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from load.bench.harness import POSTGRES_URL, free_port, scratch_postgres, serve, vimark_command
from load.bench.report import latency_fields, report, show, skipped
from load.bench.run import Run
from load.loadgen import IssueSource, Result

ISSUE_TARGET = 2000.0  # issue 12: durable Issue/s at --workers 2
ROLE = "registration"  # the issuer whose reasons include TRANSFER


def _issue_source(run: Run, plates: list[tuple[str, str]]) -> Path:
    from vimark.v1 import certificate_pb2

    path = run.work / f"issue-{uuid.uuid4().hex[:8]}.pickle"
    source = IssueSource(plates, f"bench-{uuid.uuid4().hex[:10]}", certificate_pb2.ISSUE_REASON_TRANSFER)
    path.write_bytes(pickle.dumps(source))
    return path


def _marks_in(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM marks")).scalar_one())
    finally:
        engine.dispose()


def _measure_writes(run: Run, url: str, keys: Path, log: Path, plates: list[tuple[str, str]]) -> Result:
    """Issue load on a `vimark serve` of `url`; checks that every Issue counted wrote a mark."""
    before = _marks_in(url)
    target = f"127.0.0.1:{free_port()}"
    with serve(vimark_command(url, keys, target, ROLE, run.workers), target, log):
        result = run.load(target, "Issue", _issue_source(run, plates), concurrency=32)
    written = _marks_in(url) - before
    if written < result.ok:  # the warmup's Issues write too: written counts at least the measured ones
        raise RuntimeError(f"{result.ok:,} Issues answered but {written:,} marks written: not durable writes")
    return result


def _commit_loop(commit_one: Callable[[], None], threads: int, seconds: float) -> float:
    """Durable single-row commits per second from `threads` threads."""
    counts = [0] * threads
    end = time.perf_counter() + seconds

    def loop(k: int) -> None:
        while time.perf_counter() < end:
            commit_one()
            counts[k] += 1

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def issue_sqlite(run: Run) -> None:
    """Issue/s on the embedded SQLite file (durable: WAL, synchronous=FULL) against the raw rate of
    durable one-row commits on the same file system."""
    db, keys = run.data.copy_to(run.work / "issue-sqlite")
    result = _measure_writes(run, f"sqlite:///{db}", keys, run.work / "issue-sqlite.log", run.data.issuable)
    show("vimark Issue (SQLite)", result, "issues/s")
    raw_db = run.work / "issue-sqlite" / "raw.db"
    conn = sqlite3.connect(raw_db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    row = os.urandom(300)

    def commit_one() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (row,))
        conn.execute("COMMIT")

    raw = _commit_loop(commit_one, 1, min(run.duration, 5.0))
    conn.close()
    print(f"  raw durable SQLite commits   {raw:>10,.0f} /s (one row each, WAL, synchronous=FULL)")
    report(
        run,
        "issue_sqlite",
        result.rate,
        "issues/s",
        raw,
        "raw durable one-row SQLite commits/s",
        target_value=ISSUE_TARGET,
        **latency_fields(result),
        errors=dict(result.errors),
    )


def issue_postgres(run: Run) -> None:
    """Issue/s on PostgreSQL against the raw rate of one-row commits from 16 connections."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_postgres("vimark_bench"))
        except OperationalError as exc:
            print(f"  skipped: PostgreSQL unreachable at {POSTGRES_URL}: {exc.orig}")
            skipped("issue_postgres", f"PostgreSQL unreachable at {POSTGRES_URL}")
            return
        from vimark.server.records import VehicleRecord
        from vimark.server.store import Store

        source = Store(f"sqlite:///{run.data.db}", migrate=False)
        wanted = set(run.data.issuable[: 1000 if run.quick else 5000])
        vehicles = [
            VehicleRecord(**{**v.__dict__, "current_serial": 0})
            for v in source.snapshot()[1]
            if (v.plate_type, v.plate_number) in wanted
        ]
        source.close()
        store = Store(url)
        for i in range(0, len(vehicles), 1000):
            store.upsert_vehicles(vehicles[i : i + 1000])
        store.close()
        keys = run.work / "issue-postgres-keys"
        shutil.copytree(run.data.keys, keys)
        result = _measure_writes(run, url, keys, run.work / "issue-pg.log", sorted(wanted))
        show("vimark Issue (PostgreSQL)", result, "issues/s")
        engine = create_engine(url, pool_size=16, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE raw_commit (id BIGSERIAL PRIMARY KEY, body BYTEA)"))
        row = os.urandom(300)
        local = threading.local()

        def commit_one() -> None:
            if not hasattr(local, "conn"):
                local.conn = engine.raw_connection()
                local.conn.autocommit = True
            with local.conn.cursor() as cur:
                cur.execute("INSERT INTO raw_commit (body) VALUES (%s)", (row,))

        raw = _commit_loop(commit_one, 16, min(run.duration, 5.0))
        engine.dispose()
        print(f"  raw PostgreSQL commits       {raw:>10,.0f} /s (one row each, 16 connections)")
        report(
            run,
            "issue_postgres",
            result.rate,
            "issues/s",
            raw,
            "raw one-row PostgreSQL commits/s, 16 connections",
            **latency_fields(result),
            errors=dict(result.errors),
            postgres_vehicles=len(vehicles),
        )
