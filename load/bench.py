"""vimark's benchmarks, each against a baseline measured in the same run on the same cores.

    python -m load.bench all [--quick] [--workers N] [--vehicles N]
    python -m load.bench NAME [...]       NAME: verify_unary lookup_unary verify_batch verify_latency
                                                issue_sqlite issue_postgres

Each benchmark prints its figures for people and, as the last line of its section, one JSON
object ({"benchmark", "value", "unit", "baseline", "ratio", ...}) for a script to track from commit
to commit. `--quick` shortens every measurement to about two seconds and uses a small dataset:
the CI smoke run, whose figures mean nothing. load/README.md gives the method and the results.

Servers run as subprocesses (`vimark serve` in development mode on loopback, `--role police` for
the verify benchmarks and `--role issuer` for Issue; `--workers N` is passed when N > 1) on a
private copy of the cached dataset (load/dataset.py); the load comes from load/loadgen.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load import dataset as datasets
from load import loadgen
from load.loadgen import IssueSource, Load, Result

ROOT = Path(__file__).resolve().parent.parent
BATCH = 256
VERIFY_TARGET, LOOKUP_TARGET, BATCH_TARGET, P99_TARGET_MS, ISSUE_TARGET = 0.65, 0.85, 0.80, 10.0, 1000.0
POSTGRES_URL = os.environ.get(
    "VIMARK_BENCH_POSTGRES", os.environ.get("VIMARK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
)


# -- the machine and the commit ---------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return head.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except OSError:
        return "unknown"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers as subprocesses ------------------------------------------------------------------
@dataclass
class Served:
    target: str
    process: subprocess.Popen[bytes]
    log: Path


def _wait_serving(target: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited ({process.returncode}); its log:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError):
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            time.sleep(0.1)
    raise RuntimeError(f"server on {target} not SERVING after {timeout}s; its log:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve(command: list[str], target: str, log: Path) -> Iterator[Served]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_serving(target, process, log)
        yield Served(target, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def vimark_command(db_url: str, keys: Path, listen: str, role: str, workers: int) -> list[str]:
    exe = shutil.which("vimark")
    base = [exe] if exe else [sys.executable, "-c", "from vimark.server.cli.main import main; main()"]
    command = [*base, "serve", "--db", db_url, "--keys", str(keys), "--listen", listen, "--metrics-port", "0"]
    command += ["--role", role, "--shutdown-delay", "0"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def echo_command(listen: str, kind: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "load.echo", "--listen", listen, "--kind", kind, "--workers", str(workers)]


# -- one run's shared state -------------------------------------------------------------------
@dataclass
class Run:
    quick: bool
    workers: int
    processes: int
    vehicles: int
    work: Path
    data: datasets.Dataset
    echo: dict[str, tuple[str, Result]] = field(default_factory=dict)  # method -> (kind, result)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    police: Served | None = None

    @property
    def warmup(self) -> float:
        return 0.5 if self.quick else 3.0

    @property
    def duration(self) -> float:
        return 1.5 if self.quick else 20.0

    def requests(self, name: str, items: list[bytes]) -> Path:
        path = self.work / f"{name}.pickle"
        if not path.exists():
            path.write_bytes(pickle.dumps(items))
        return path

    def load(self, target: str, method: str, requests: Path, **kw: Any) -> Result:
        kw.setdefault("duration", self.duration)
        kw.setdefault("warmup", self.warmup)
        kw.setdefault("processes", self.processes)
        return loadgen.run(Load(target, method, requests, **kw))

    def police_server(self) -> Served:
        """One police server per run, shared by the verify benchmarks (they only read)."""
        if self.police is None:
            db, keys = self.data.copy_to(self.work / "police")
            target = f"127.0.0.1:{free_port()}"
            command = vimark_command(f"sqlite:///{db}", keys, target, "police", self.workers)
            self.police = self.stack.enter_context(serve(command, target, self.work / "police.log"))
            _check_verdicts(self.police.target, self.data)
        return self.police

    def echo_baseline(self, method: str, requests: Path, **kw: Any) -> tuple[str, Result]:
        """The faster of a sync and an asyncio echo server, same workers, same load."""
        key = method if not kw else f"{method}{sorted(kw.items())}"
        if key not in self.echo:
            best: tuple[str, Result] | None = None
            for kind in ("sync", "aio"):
                target = f"127.0.0.1:{free_port()}"
                with serve(echo_command(target, kind, self.workers), target, self.work / f"echo-{kind}.log"):
                    result = self.load(target, method, requests, **kw)
                print(f"  echo ({kind}) {method:<20} {result.rate:>10,.0f} calls/s  p99 {result.percentile(99):.2f} ms")
                if best is None or result.rate > best[1].rate:
                    best = (kind, result)
            assert best is not None
            self.echo[key] = best
        return self.echo[key]

    def verify_requests(self) -> Path:
        from vimark.v1 import mark_service_pb2 as pb

        return self.requests("verify", [pb.VerifyRequest(qr_text=t).SerializeToString() for t, _ in self.data.marks])

    def report(self, name: str, value: float, unit: str, baseline: float, baseline_name: str, **extra: Any) -> None:
        ratio = value / baseline if baseline else 0.0
        print(f"  => {name}: {value:,.2f} {unit} vs {baseline_name} {baseline:,.2f}: ratio {ratio:.3f}")
        line = {
            "benchmark": name,
            "value": round(value, 3),
            "unit": unit,
            "baseline": round(baseline, 3),
            "baseline_name": baseline_name,
            "ratio": round(ratio, 3),
            **extra,
            "workers": self.workers,
            "load_processes": self.processes,
            "vehicles": self.data.vehicles,
            "duration_s": self.duration,
            "quick": self.quick,
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "commit": commit(),
        }
        print(json.dumps(line, ensure_ascii=False), flush=True)


def _check_verdicts(target: str, data: datasets.Dataset, sample: int = 200) -> None:
    """Before measuring: the server gives the verdicts the dataset expects (a sample of each)."""
    from vimark.client.sdk import VimarkClient
    from vimark.v1 import mark_service_pb2 as pb

    by_verdict: dict[str, list[str]] = {}
    for text, verdict in data.marks:
        if len(by_verdict.setdefault(verdict, [])) < sample // 5:
            by_verdict[verdict].append(text)
    with VimarkClient(target) as client:
        for expected, texts in by_verdict.items():
            got = Counter(
                pb.Verdict.Name(r.verdict).removeprefix("VERDICT_") for r in client.verify_batch(texts).results
            )
            if got != Counter({expected: len(texts)}):
                raise RuntimeError(f"dataset expects {expected} for {len(texts)} marks; the server says {dict(got)}")


def _latency_fields(result: Result) -> dict[str, float]:
    return {f"p{p}_ms".replace(".", "_"): round(result.percentile(p), 3) for p in (50, 90, 99, 99.9)}


def _show(label: str, result: Result, unit: str = "calls/s") -> None:
    errors = f"  errors {dict(result.errors)}" if result.errors else ""
    print(
        f"  {label:<28} {result.rate:>10,.0f} {unit}  p50 {result.percentile(50):.2f} ms  "
        f"p99 {result.percentile(99):.2f} ms{errors}",
        flush=True,
    )


# -- the benchmarks ---------------------------------------------------------------------------
def verify_unary(run: Run) -> None:
    """Unary Verify calls/s (every call a different mark) against the echo floor."""
    served = run.police_server()
    requests = run.verify_requests()
    kind, echo = run.echo_baseline("Verify", requests)
    ceiling = signature_only(run, requests)
    result = run.load(served.target, "Verify", requests)
    _show("vimark Verify", result)
    print(f"  vimark / signature-only      {result.rate / ceiling.rate:>10.3f}  (what vimark's own Python leaves)")
    run.report(
        "verify_unary",
        result.rate,
        "requests/s",
        echo.rate,
        f"echo-{kind}",
        target_ratio=VERIFY_TARGET,
        signature_only=round(ceiling.rate, 3),
        signature_only_ratio=round(ceiling.rate / echo.rate, 3) if echo.rate else 0.0,
        **_latency_fields(result),
        errors=dict(result.errors),
        distinct_requests=len(run.data.marks),
        mix=dict(run.data.mix()),
    )


def signature_only(run: Run, requests: Path) -> Result:
    """The ceiling for Verify: the sync echo server checking one real signature per call (load/echo.py)."""
    target = f"127.0.0.1:{free_port()}"
    with serve(echo_command(target, "signature", run.workers), target, run.work / "echo-signature.log"):
        result = run.load(target, "Verify", requests)
    _show("signature-only handler", result)
    return result


def lookup_unary(run: Run) -> None:
    """LookupVehicleStatus calls/s by plate against the same echo floor."""
    from vimark.v1 import mark_service_pb2 as pb

    served = run.police_server()
    kind, echo = run.echo_baseline("Verify", run.verify_requests())
    requests = run.requests(
        "lookup",
        [pb.LookupVehicleStatusRequest(plate_type=t, plate_number=n).SerializeToString() for t, n in run.data.plates],
    )
    result = run.load(served.target, "LookupVehicleStatus", requests)
    _show("vimark LookupVehicleStatus", result)
    run.report(
        "lookup_unary",
        result.rate,
        "requests/s",
        echo.rate,
        f"echo-{kind}",
        target_ratio=LOOKUP_TARGET,
        **_latency_fields(result),
        errors=dict(result.errors),
        distinct_requests=len(run.data.plates),
    )


def verify_batch(run: Run) -> None:
    """VerifyBatch certificates/s (batches of 256) against the fastest raw Ed25519 verify on all cores."""
    from vimark.v1 import mark_service_pb2 as pb

    served = run.police_server()
    texts = [t for t, _ in run.data.marks]
    batches = [
        pb.VerifyBatchRequest(qr_texts=texts[i : i + BATCH]).SerializeToString()
        for i in range(0, len(texts) - BATCH + 1, BATCH)
    ]
    requests = run.requests("batch", batches)
    result = run.load(served.target, "VerifyBatch", requests, concurrency=4)
    certs = result.rate * BATCH
    print(f"  vimark VerifyBatch           {certs:>10,.0f} certificates/s  ({result.rate:,.1f} batches/s of {BATCH})")
    impl, raw, single = ed25519_baseline(run)
    print(f"  raw Ed25519 verify ({impl}) on {run.processes} cores {raw:>10,.0f} /s  (one core: {single})")
    run.report(
        "verify_batch",
        certs,
        "certificates/s",
        raw,
        f"ed25519-{impl}-x{run.processes}",
        target_ratio=BATCH_TARGET,
        batch=BATCH,
        batch_p50_ms=round(result.percentile(50), 2),
        batch_p99_ms=round(result.percentile(99), 2),
        errors=dict(result.errors),
        ed25519_single_core=single,
        distinct_requests=len(batches) * BATCH,
    )


def _ed25519_items(data: datasets.Dataset, limit: int = 20_000) -> list[tuple[bytes, bytes, bytes]]:
    from cryptography.hazmat.primitives import serialization

    from vimark.client import certificate as cert
    from vimark.server.keys import KeyDirectory

    ring = KeyDirectory(data.keys).load()
    items = []
    for text, verdict in data.marks[:limit]:
        if verdict == "FORGED":
            continue
        c = cert.decode(text, ring.seal_keys)
        public = ring.trusted[c.key_id].public_key
        raw = (
            public
            if isinstance(public, bytes)
            else public.public_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )
        items.append((raw, c.signed_message, c.signature))
    return items


def _ed25519_loop(impl: str, items: list[tuple[bytes, bytes, bytes]], seconds: float) -> int:
    """Verify items in turn for `seconds`; returns how many verified."""
    n = 0
    end = time.perf_counter() + seconds
    if impl == "pynacl":
        from nacl.bindings import crypto_sign_open

        prepared = [(pk, sig + msg) for pk, msg, sig in items]
        while time.perf_counter() < end:
            for pk, signed in prepared[:256] if n == 0 else prepared:
                crypto_sign_open(signed, pk)
                n += 1
                if n % 256 == 0 and time.perf_counter() >= end:
                    return n
    else:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        keys = {pk: Ed25519PublicKey.from_public_bytes(pk) for pk, _, _ in items}
        prepared2 = [(keys[pk], msg, sig) for pk, msg, sig in items]
        while time.perf_counter() < end:
            for key, msg, sig in prepared2:
                key.verify(sig, msg)
                n += 1
                if n % 256 == 0 and time.perf_counter() >= end:
                    return n
    return n


def _ed25519_child(impl: str, path: str, seconds: float, barrier: Any, out: Any) -> None:
    items = pickle.loads(Path(path).read_bytes())
    _ed25519_loop(impl, items, 0.2)  # warm
    barrier.wait()
    out.put(_ed25519_loop(impl, items, seconds))


def ed25519_baseline(run: Run) -> tuple[str, float, dict[str, int]]:
    """The faster of libsodium (PyNaCl) and OpenSSL (cryptography), then that loop on every core."""
    import multiprocessing as mp

    items = _ed25519_items(run.data)
    probe = 0.3 if run.quick else 1.5
    single = {impl: int(_ed25519_loop(impl, items, probe) / probe) for impl in ("pynacl", "cryptography")}
    impl = max(single, key=lambda k: single[k])
    path = run.work / "ed25519.pickle"
    path.write_bytes(pickle.dumps(items[::-1]))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(run.processes), ctx.Queue()
    seconds = run.duration
    procs = [
        ctx.Process(target=_ed25519_child, args=(impl, str(path), seconds, barrier, out)) for _ in range(run.processes)
    ]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return impl, total / seconds, single


def verify_latency(run: Run) -> None:
    """Verify latency at an offered load of 70% of the measured peak (open loop), against the echo
    server's latency at the same offered load."""
    served = run.police_server()
    requests = run.verify_requests()
    # The peak is measured again right before: on this shared machine a reading from minutes
    # earlier can be well above what the server sustains now, and 70% of it then overloads it.
    peak = run.load(served.target, "Verify", requests)
    _show("vimark Verify (peak)", peak)
    offered = 0.7 * peak.rate
    open_loop = {"rate": offered, "concurrency": 1000}
    kind, echo = run.echo_baseline("Verify", requests, **open_loop)
    result = run.load(served.target, "Verify", requests, **open_loop)
    _show(f"vimark Verify at {offered:,.0f}/s", result)
    p99 = result.percentile(99)
    run.report(
        "verify_latency",
        p99,
        "ms p99",
        echo.percentile(99),
        f"echo-{kind} p99 at the same offered load",
        better="lower",
        target_p99_ms=P99_TARGET_MS,
        offered_per_s=round(offered, 1),
        achieved_per_s=round(result.rate, 1),
        peak_per_s=round(peak.rate, 1),
        **_latency_fields(result),
        echo_p50_ms=round(echo.percentile(50), 3),
        errors=dict(result.errors),
    )


def _issue_source(run: Run, plates: list[tuple[str, str]]) -> Path:
    from vimark.v1 import certificate_pb2

    path = run.work / f"issue-{uuid.uuid4().hex[:8]}.pickle"
    source = IssueSource(plates, f"bench-{uuid.uuid4().hex[:10]}", certificate_pb2.ISSUE_REASON_REDOWNLOAD)
    path.write_bytes(pickle.dumps(source))
    return path


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
    target = f"127.0.0.1:{free_port()}"
    command = vimark_command(f"sqlite:///{db}", keys, target, "issuer", run.workers)
    with serve(command, target, run.work / "issue-sqlite.log"):
        result = run.load(target, "Issue", _issue_source(run, run.data.issuable), concurrency=32)
    _show("vimark Issue (SQLite)", result, "issues/s")
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
    run.report(
        "issue_sqlite",
        result.rate,
        "issues/s",
        raw,
        "raw durable one-row SQLite commits/s",
        target_value=ISSUE_TARGET,
        **_latency_fields(result),
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
            print(json.dumps({"benchmark": "issue_postgres", "skipped": f"PostgreSQL unreachable at {POSTGRES_URL}"}))
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
        target = f"127.0.0.1:{free_port()}"
        keys = run.work / "issue-postgres-keys"
        shutil.copytree(run.data.keys, keys)
        with serve(vimark_command(url, keys, target, "issuer", run.workers), target, run.work / "issue-pg.log"):
            result = run.load(target, "Issue", _issue_source(run, sorted(wanted)), concurrency=32)
        _show("vimark Issue (PostgreSQL)", result, "issues/s")
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
        run.report(
            "issue_postgres",
            result.rate,
            "issues/s",
            raw,
            "raw one-row PostgreSQL commits/s, 16 connections",
            **_latency_fields(result),
            errors=dict(result.errors),
            postgres_vehicles=len(vehicles),
        )


@contextlib.contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on POSTGRES_URL's server, dropped on leaving.
    Raises SQLAlchemy's OperationalError when PostgreSQL is unreachable."""
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


BENCHMARKS: dict[str, Callable[[Run], None]] = {
    "verify_unary": verify_unary,
    "lookup_unary": lookup_unary,
    "verify_batch": verify_batch,
    "verify_latency": verify_latency,
    "issue_sqlite": issue_sqlite,
    "issue_postgres": issue_postgres,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["all", *BENCHMARKS])
    parser.add_argument("--quick", action="store_true", help="a few seconds each, small dataset (CI smoke)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (and echo processes)")
    parser.add_argument("--processes", type=int, default=0, help="load generator processes (default: one per core)")
    parser.add_argument("--vehicles", type=int, default=0, help="dataset size (default 100,000; --quick 2,000)")
    args = parser.parse_args(argv)
    vehicles = args.vehicles or (datasets.QUICK_VEHICLES if args.quick else datasets.FULL_VEHICLES)
    data = datasets.load(vehicles)
    work = Path(tempfile.mkdtemp(prefix="vimark-bench-"))
    run = Run(args.quick, args.workers, args.processes or os.cpu_count() or 1, vehicles, work, data)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    print(
        f"vimark benchmarks at {commit()} on {os.cpu_count()} cores ({cpu_model()}); server workers {run.workers}, "
        f"load processes {run.processes}; dataset {data.vehicles:,} vehicles, {len(data.marks):,} distinct marks "
        f"{dict(data.mix())}",
        flush=True,
    )
    try:
        with run.stack:
            for name in names:
                print(f"\n## {name}: {(BENCHMARKS[name].__doc__ or '').splitlines()[0]}", flush=True)
                BENCHMARKS[name](run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
