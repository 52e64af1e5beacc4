"""Issue/s in-process (Issuer + index catch-up: what the Issue handler does, without gRPC), or
through a real `vimark serve` process (`--via grpc`).

    python -m load.issue_rate [--seconds 5] [--runs 3] [--threads 1 16] [--db sqlite postgresql]
    python -m load.issue_rate --via grpc [--seconds 5] [--runs 3] [--threads 1 16 64] [--db ...]

Each run uses a fresh database (a SQLite file in a temporary directory, or a fresh PostgreSQL
database on load/bench/harness.py's POSTGRES_URL) with 2,000 registered vehicles. Every Issue is a TRANSFER:
a grant that carries the vehicle's validity onto a new mark and supersedes the old one, so each
writes a mark and a change-log row (a re-download only hands the current mark back). In-process,
every thread issues for its own vehicles, and a run fails if an Issue wrote nothing. Through gRPC,
the server (`--role registration`) seeds them (`--demo`) and load/loadgen.py (what
load/bench/issue.py uses: one process per core, grpc.aio) keeps `threads` calls in flight in all
(load.bench: 32 per core). Prints the median Issue/s of the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from load import loadgen
from load.bench.harness import free_port, scratch_postgres, serve, vimark_command
from vimark.client.domain import BLOCKS_ISSUE_MASK, china_date
from vimark.server import rules
from vimark.server.demo import demo_vehicles
from vimark.server.index import ValidityIndex
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.keys import KeyDirectory
from vimark.server.metrics import Metrics
from vimark.server.store import Store
from vimark.server.sync import IndexFollower, ReloadableKeyRing
from vimark.v1 import certificate_pb2

VEHICLES = 2000
TRANSFER = certificate_pb2.ISSUE_REASON_TRANSFER  # a grant: a new mark each time


def _clock() -> dt.datetime:
    return dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


@contextmanager
def _database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'issue-{uuid.uuid4().hex[:8]}.db'}"
        return
    with scratch_postgres("vimark_rate") as url:
        yield url


def run_once(kind: str, threads: int, seconds: float, workdir: Path, keys: ReloadableKeyRing) -> float:
    with _database(kind, workdir) as url:
        store = Store(url)
        try:
            today = china_date(_clock())
            vehicles = [
                v
                for v in demo_vehicles(VEHICLES, today)
                if rules.within_validity(v.valid_until, today) and not v.status_bits & BLOCKS_ISSUE_MASK
            ]
            for start in range(0, len(vehicles), 1000):
                store.upsert_vehicles(vehicles[start : start + 1000])
            sync = IndexFollower(store, ValidityIndex(), Metrics())
            sync.load()
            issuer = Issuer(store, keys.signer, _clock)
            stop = threading.Event()
            counts = [0] * threads
            errors: list[BaseException] = []

            def work(t: int) -> None:
                mine = vehicles[t::threads]
                i = 0
                try:
                    while not stop.is_set():
                        v = mine[i % len(mine)]
                        command = IssueCommand(f"rate-{t}-{i}", v.plate_type, v.plate_number, v.vin, TRANSFER, None, "")
                        issued = issuer.issue(command)
                        if issued.change_id is None:
                            raise RuntimeError(f"{command.request_id}: the Issue wrote no mark (a copy or a replay)")
                        sync.catch_up(at_least=issued.change_id)
                        i += 1
                        counts[t] = i
                except BaseException as exc:  # reported below: a failed run is not a figure
                    errors.append(exc)

            workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            started = time.perf_counter()
            for w in workers:
                w.start()
            time.sleep(seconds)
            done_at = sum(counts)
            elapsed = time.perf_counter() - started
            stop.set()
            for w in workers:
                w.join()
            if errors:
                raise errors[0]
            return done_at / elapsed
        finally:
            store.close()


def run_grpc(kind: str, in_flight: int, seconds: float, workdir: Path) -> float:
    """One `vimark serve --demo` process on a fresh database, loaded by load/loadgen.py with
    `in_flight` calls in flight in all (load.bench keeps 32 per core)."""
    with _database(kind, workdir) as url:
        target = f"127.0.0.1:{free_port()}"
        command = [*vimark_command(url, workdir / "keys", target, "registration", 1), "--demo", str(VEHICLES)]
        with serve(command, target, workdir / f"serve-{uuid.uuid4().hex[:8]}.log"):
            # The vehicles seed_demo gave a mark (its clock is the real one): a TRANSFER succeeds for each.
            today = china_date(dt.datetime.now(dt.UTC))
            plates = [
                (v.plate_type, v.plate_number)
                for v in demo_vehicles(VEHICLES, today)
                if rules.within_validity(v.valid_until, today) and not v.status_bits & BLOCKS_ISSUE_MASK
            ]
            source = workdir / f"issue-{uuid.uuid4().hex[:8]}.pickle"
            tag = f"rate-{uuid.uuid4().hex[:8]}"
            source.write_bytes(pickle.dumps(loadgen.IssueSource(plates, tag, TRANSFER)))
            processes = min(in_flight, os.cpu_count() or 1)
            load = loadgen.Load(
                target, "Issue", source, seconds, warmup=1.0, processes=processes, concurrency=in_flight // processes
            )
            result = loadgen.run(load)
        if result.errors:
            raise RuntimeError(f"Issue errors over gRPC: {dict(result.errors)}")
        return result.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--via",
        default="inprocess",
        choices=["inprocess", "grpc"],
        help="grpc: through a `vimark serve` process; --threads is then the calls in flight in all",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        KeyDirectory(workdir / "keys", _clock).init()
        keys = ReloadableKeyRing(KeyDirectory(workdir / "keys", _clock))
        for kind in args.db:
            for threads in args.threads:
                if args.via == "grpc":
                    rates = [run_grpc(kind, threads, args.seconds, workdir) for _ in range(args.runs)]
                else:
                    rates = [run_once(kind, threads, args.seconds, workdir, keys) for _ in range(args.runs)]
                print(
                    f"{kind:10} {args.via} threads={threads:<3} Issue/s median {statistics.median(rates):7.0f}"
                    f"  (runs: {', '.join(f'{r:.0f}' for r in rates)})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
