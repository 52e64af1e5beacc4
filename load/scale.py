"""Province scale (issue 9 item 7): what one node costs at N vehicles, measured against the same
figures at a small registry (or an empty one) in the same run.

    python -m load.scale --vehicles 1000000 --seconds 5 [--fast-build] [--quick] [--no-postgres]

Prints each figure as a line and, last, one JSON object with all of them:
- import_rate: vehicles/s writing the registry through `Store.upsert_vehicles` in batches of 1,000
  (as `vimark vehicles import` sends them); measured on the first build only (null when the cached
  registry is reused). With --fast-build only the first 20,000 vehicles go through that path (the
  rate is theirs) and the rest are written with executemany in one transaction.
- cold_start_store_s: seconds from starting `vimark serve` on the SQLite file to health SERVING
  (the index streamed from the store).
- rss_steady_bytes_per_vehicle / rss_peak_bytes_per_vehicle: VmRSS once SERVING and VmHWM of the
  server, minus the same of a server on an empty database, divided by N.
- verify_rate / lookup_rate: closed-loop Verify and LookupVehicleStatus at N and at 20,000 vehicles,
  and their ratios (N / 20,000).
- replica_lag_p99_ms: two servers on one scratch PostgreSQL database; Issues at about 100/s on A,
  the time until B's LookupVehicleStatus shows each new serial.

Registries are cached under load/.data/ keyed by N (and today's date: marks are judged today);
servers run on a private copy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import loadgen
from load.bench.harness import ROOT, free_port, scratch_postgres, vimark_executable
from vimark.client.domain import china_date, month_of, system_clock
from vimark.client.errors import VimarkError
from vimark.server.demo import demo_vehicles
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.keys import KeyDirectory
from vimark.server.records import VehicleRecord
from vimark.server.store import Store
from vimark.server.sync import ReloadableKeyRing
from vimark.v1 import certificate_pb2
from vimark.v1 import mark_service_pb2 as pb

DATA_DIR = Path(__file__).resolve().parent / ".data"
FORMAT = 1  # bump when the registry generator changes
SEED = 2026
REFERENCE_VEHICLES = 20_000
MARKS = 2_000  # marks issued (in-process, TRANSFER) for a sample of vehicles
LOOKUP_PLATES = 10_000
SLOW_PART = 20_000  # with --fast-build: vehicles written through upsert_vehicles (the measured rate)
_TRANSFER = certificate_pb2.ISSUE_REASON_TRANSFER


@dataclass(frozen=True)
class Registry:
    path: Path
    vehicles: int
    import_rate: float | None  # None: reused from the cache
    import_measured_on: int
    fast_build: bool
    marks: list[str]
    plates: list[tuple[str, str]]

    @property
    def db(self) -> Path:
        return self.path / "vimark.db"

    @property
    def keys(self) -> Path:
        return self.path / "keys"


def _say(line: str) -> None:
    print(line, flush=True)


# -- building ----------------------------------------------------------------------------------
def registry(n: int, *, fast_build: bool) -> Registry:
    today = china_date(system_clock())
    key = hashlib.sha256(f"{FORMAT}:{n}:{SEED}:{today}".encode()).hexdigest()[:12]
    path = DATA_DIR / f"scale-{n}-{key}"
    manifest = path / "scale.json"
    fresh = not manifest.exists()
    if fresh:
        _say(f"building a registry of {n:,} vehicles in {path} (cached for later runs)...")
        _build(path, n, fast_build=fast_build)
    data = json.loads(manifest.read_text())
    return Registry(
        path=path,
        vehicles=data["vehicles"],
        import_rate=data["import_rate"] if fresh else None,
        import_measured_on=data["import_measured_on"],
        fast_build=data["fast_build"],
        marks=data["marks"],
        plates=[(t, p) for t, p in data["plates"]],
    )


def _fast_rows(db: Path, vehicles: list[VehicleRecord]) -> None:
    """The rows upsert_vehicles would insert into an empty registry, in one transaction (no change
    log: a server loads the vehicles table itself)."""
    conn = sqlite3.connect(db)
    try:
        conn.executemany(
            "INSERT INTO vehicles (plate_type, plate_number, vin, category, registered_on, seats,"
            " exemption_lost, status_bits, valid_until, current_serial) VALUES (?,?,?,?,?,?,?,?,?,0)",
            (
                (
                    v.plate_type,
                    v.plate_number,
                    v.vin,
                    v.category.value,
                    v.registered_on.isoformat(),
                    v.seats,
                    int(v.exemption_lost),
                    v.status_bits,
                    v.valid_until,
                )
                for v in vehicles
            ),
        )
        conn.commit()
    finally:
        conn.close()


def _build(path: Path, n: int, *, fast_build: bool) -> None:
    staging = path.with_name(path.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    db, keys = staging / "vimark.db", staging / "keys"
    KeyDirectory(keys).init()
    today = china_date(system_clock())
    vehicles = demo_vehicles(n, today, SEED)
    store = Store(f"sqlite:///{db}")  # migrated; the store's own (durable) settings
    slow = min(n, SLOW_PART) if fast_build else n
    started = time.perf_counter()
    for start in range(0, slow, 1000):
        store.upsert_vehicles(vehicles[start : min(start + 1000, slow)])
        if start and start % 100_000 == 0:
            _say(f"  {start:,} vehicles through upsert_vehicles, {start / (time.perf_counter() - started):,.0f}/s")
    rate = slow / (time.perf_counter() - started)
    _say(f"  upsert_vehicles: {slow:,} vehicles at {rate:,.0f}/s")
    if slow < n:
        store.close()
        t = time.perf_counter()
        _fast_rows(db, vehicles[slow:])
        _say(f"  executemany: {n - slow:,} vehicles in {time.perf_counter() - t:.1f}s")
        store = Store(f"sqlite:///{db}")

    # Marks for a sample of vehicles the rules will grant a TRANSFER to (within validity, no status).
    rng = random.Random(SEED)
    current = month_of(today)
    eligible = [v for v in vehicles if v.valid_until is not None and v.valid_until >= current and not v.status_bits]
    sample = rng.sample(eligible, min(MARKS, len(eligible)))
    issuer = Issuer(store, ReloadableKeyRing(KeyDirectory(keys)).signer, system_clock)

    def issue(i: int) -> str | None:
        v = sample[i]
        with contextlib.suppress(VimarkError):
            command = IssueCommand(f"scale-{i}", v.plate_type, v.plate_number, v.vin, _TRANSFER, None, "")
            text: str = issuer.issue(command).mark.qr_text
            return text
        return None

    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        marks = [m for m in pool.map(issue, range(len(sample))) if m]
    _say(f"  {len(marks):,} marks issued in {time.perf_counter() - t:.1f}s")
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    plates = [(v.plate_type, v.plate_number) for v in rng.sample(vehicles, min(LOOKUP_PLATES, n))]
    (staging / "scale.json").write_text(
        json.dumps(
            {
                "vehicles": n,
                "import_rate": rate,
                "import_measured_on": slow,
                "fast_build": slow < n,
                "marks": marks,
                "plates": plates,
            },
            ensure_ascii=False,
        )
    )
    shutil.rmtree(path, ignore_errors=True)
    staging.replace(path)


# -- serving -----------------------------------------------------------------------------------
@dataclass
class Server:
    target: str
    process: subprocess.Popen[bytes]
    cold_start_s: float

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]


@contextlib.contextmanager
def serve(db_url: str, keys: Path, log: Path, role: str | None = None) -> Iterator[Server]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"127.0.0.1:{free_port()}"
    command = [*vimark_executable(), "serve", "--db", db_url, "--keys", str(keys), "--listen", target]
    command += ["--metrics-port", "0", "--shutdown-delay", "0"]
    if role:
        command += ["--role", role]
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 900
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited ({process.returncode}); its log:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not SERVING after 900 s; its log:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(grpc.RpcError):
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                time.sleep(0.05)
        yield Server(target, process, time.perf_counter() - started)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _private_copy(source: Registry | None, keys: Path, directory: Path) -> Path:
    """A copy of the registry's database (or a new empty one) in `directory`; returns the db file."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "vimark.db"
    for leftover in (db, db.with_name("vimark.db-wal"), db.with_name("vimark.db-shm")):
        leftover.unlink(missing_ok=True)
    if source is None:
        Store(f"sqlite:///{db}").close()  # migrated, no vehicles
    else:
        shutil.copyfile(source.db, db)
    return db


def _rate(target: str, method: str, requests: list[bytes], seconds: float, work: Path) -> float:
    file = work / f"{method}.pickle"
    file.write_bytes(pickle.dumps(requests))
    result = loadgen.run(
        loadgen.Load(target, method, file, duration=seconds, warmup=1.0, processes=2, concurrency=8, channels=2)
    )
    if result.errors:
        _say(f"    {method} errors: {dict(result.errors)}")
    return result.rate


@dataclass
class Measured:
    cold_start_s: float
    rss: int
    hwm: int
    verify_rate: float | None
    lookup_rate: float | None


def measure(reg: Registry | None, keys: Path, work: Path, seconds: float, label: str) -> Measured:
    db = _private_copy(reg, keys, work / label)
    with serve(f"sqlite:///{db}", keys, work / f"{label}.log") as server:
        time.sleep(1.0)  # settled: what a SERVING node holds
        rss, hwm = server.memory()
        mib = f"VmRSS {rss / 2**20:,.1f} MiB, VmHWM {hwm / 2**20:,.1f} MiB"
        _say(f"  [{label}] SERVING after {server.cold_start_s:.2f}s, {mib}")
        verify = lookup = None
        if reg is not None and seconds > 0:
            verify_requests = [pb.VerifyRequest(qr_text=m).SerializeToString() for m in reg.marks]
            lookup_requests = [
                pb.LookupVehicleStatusRequest(plate_type=t, plate_number=p).SerializeToString() for t, p in reg.plates
            ]
            verify = _rate(server.target, "Verify", verify_requests, seconds, work)
            lookup = _rate(server.target, "LookupVehicleStatus", lookup_requests, seconds, work)
            _say(f"  [{label}] Verify {verify:,.0f}/s, LookupVehicleStatus {lookup:,.0f}/s")
    return Measured(server.cold_start_s, rss, hwm, verify, lookup)


# -- replication lag ---------------------------------------------------------------------------
def replica_lag(keys: Path, work: Path, issues: int, rate: float) -> dict[str, Any]:
    import grpc

    from vimark.v1 import mark_service_pb2_grpc as rpc

    today = china_date(system_clock())
    current = month_of(today)
    vehicles = demo_vehicles(max(2 * issues, 1000), today, SEED + 1)
    with scratch_postgres("vimark_scale") as url:
        store = Store(url)
        for start in range(0, len(vehicles), 1000):
            store.upsert_vehicles(vehicles[start : start + 1000])
        store.close()
        eligible = [v for v in vehicles if v.valid_until is not None and v.valid_until >= current and not v.status_bits]
        with (
            serve(url, keys, work / "pg-a.log", role="registration") as a,
            serve(url, keys, work / "pg-b.log") as b,
            grpc.insecure_channel(a.target) as channel_a,
            grpc.insecure_channel(b.target) as channel_b,
        ):
            issue_stub, lookup_stub = rpc.MarkServiceStub(channel_a), rpc.MarkServiceStub(channel_b)
            lags: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def follow(request: pb.LookupVehicleStatusRequest, serial: int, since: float) -> None:
                deadline = since + 30
                while time.perf_counter() < deadline:
                    if lookup_stub.LookupVehicleStatus(request, timeout=5).current_serial >= serial:
                        with lock:
                            lags.append(time.perf_counter() - since)
                        return
                    time.sleep(0.002)
                with lock:
                    errors.append(f"serial {serial} not on B after 30 s")

            pool = ThreadPoolExecutor(16)
            tag = os.urandom(4).hex()
            started = time.perf_counter()
            sent = 0
            for i in range(issues):
                due = started + i / rate
                if (pause := due - time.perf_counter()) > 0:
                    time.sleep(pause)
                v = eligible[i % len(eligible)]
                request = pb.IssueRequest(
                    request_id=f"lag-{tag}-{i}", plate_type=v.plate_type, plate_number=v.plate_number, reason=_TRANSFER
                )
                try:
                    response = issue_stub.Issue(request, timeout=10)
                except grpc.RpcError as exc:
                    errors.append(f"Issue: {exc.code().name}")  # type: ignore[attr-defined]
                    continue
                issued_at = time.perf_counter()
                sent += 1
                lookup = pb.LookupVehicleStatusRequest(plate_type=v.plate_type, plate_number=v.plate_number)
                pool.submit(follow, lookup, response.serial, issued_at)
            offered = sent / (time.perf_counter() - started)
            pool.shutdown(wait=True)
    ms = sorted(x * 1000 for x in lags)
    if not ms:
        return {"skipped": f"no Issue reached B: {errors[:3]}"}
    return {
        "issues": sent,
        "issue_rate": offered,
        "p50_ms": ms[len(ms) // 2],
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
        "errors": len(errors),
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


# -- the command -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate measurement")
    parser.add_argument("--quick", action="store_true", help="2,000 vehicles against 1,000, 1 s rates, 60 Issues")
    fast_help = f"only the first {SLOW_PART:,} vehicles through upsert_vehicles, the rest by executemany"
    parser.add_argument("--fast-build", action="store_true", help=fast_help)
    parser.add_argument("--no-postgres", action="store_true", help="skip the replica lag")
    args = parser.parse_args(argv)
    n, reference, seconds, issues = args.vehicles, REFERENCE_VEHICLES, args.seconds, 300
    if args.quick:
        n, reference, seconds, issues = min(n, 2_000), 1_000, 1.0, 60
    _say(f"load.scale: {n:,} vehicles against {reference:,}, {seconds:g} s per rate, {os.cpu_count()} cores")

    reg = registry(n, fast_build=args.fast_build)
    ref = registry(reference, fast_build=False)
    result: dict[str, Any] = {"benchmark": "scale", "vehicles": n, "reference_vehicles": reference}
    if reg.import_rate is None:
        _say("import_rate: null (registry reused from the cache)")
    else:
        how = f"first {reg.import_measured_on:,} vehicles, rest by --fast-build" if reg.fast_build else "all vehicles"
        _say(f"import_rate: {reg.import_rate:,.0f} vehicles/s through upsert_vehicles ({how})")
    rate = None if reg.import_rate is None else round(reg.import_rate, 1)
    result.update(import_rate=rate, import_measured_on=reg.import_measured_on, fast_build=reg.fast_build)

    work = Path(tempfile.mkdtemp(prefix="scale-run-", dir=DATA_DIR))
    try:
        empty = measure(None, reg.keys, work, 0, "empty")
        big = measure(reg, reg.keys, work, seconds, f"n{n}")
        small = measure(ref, ref.keys, work, seconds, f"n{reference}")
        steady = (big.rss - empty.rss) / n
        peak = (big.hwm - empty.hwm) / n
        _say(f"cold_start_store_s: {big.cold_start_s:.2f} s at {n:,} vehicles (empty: {empty.cold_start_s:.2f} s)")
        _say(f"rss_steady_bytes_per_vehicle: {steady:,.0f} (VmRSS {_mib(big.rss)}, empty {_mib(empty.rss)})")
        _say(f"rss_peak_bytes_per_vehicle: {peak:,.0f} (VmHWM {_mib(big.hwm)}, empty {_mib(empty.hwm)})")
        assert big.verify_rate is not None and small.verify_rate and big.lookup_rate is not None and small.lookup_rate
        verify_ratio, lookup_ratio = big.verify_rate / small.verify_rate, big.lookup_rate / small.lookup_rate
        at_n, at_ref = f"at {n:,}", f"at {reference:,}"
        _say(f"verify_rate: {big.verify_rate:,.0f}/s {at_n}, {small.verify_rate:,.0f}/s {at_ref}: {verify_ratio:.3f}")
        _say(f"lookup_rate: {big.lookup_rate:,.0f}/s {at_n}, {small.lookup_rate:,.0f}/s {at_ref}: {lookup_ratio:.3f}")
        result.update(
            cold_start_store_s=round(big.cold_start_s, 3),
            cold_start_empty_s=round(empty.cold_start_s, 3),
            rss_steady_bytes_per_vehicle=round(steady, 1),
            rss_peak_bytes_per_vehicle=round(peak, 1),
            rss_bytes=big.rss,
            hwm_bytes=big.hwm,
            empty_rss_bytes=empty.rss,
            empty_hwm_bytes=empty.hwm,
            verify_rate=round(big.verify_rate, 1),
            verify_rate_reference=round(small.verify_rate, 1),
            verify_ratio=round(verify_ratio, 3),
            lookup_rate=round(big.lookup_rate, 1),
            lookup_rate_reference=round(small.lookup_rate, 1),
            lookup_ratio=round(lookup_ratio, 3),
            marks=len(reg.marks),
            seconds=seconds,
        )
        if args.no_postgres:
            result["replica_lag_p99_ms"] = None
            result["replica_lag_skipped"] = "--no-postgres"
            _say("replica_lag_p99_ms: skipped (--no-postgres)")
        else:
            try:
                lag = replica_lag(reg.keys, work, issues, 100.0)
            except Exception as exc:  # PostgreSQL unreachable (or the scratch database refused)
                lag = {"skipped": f"PostgreSQL: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            if "skipped" in lag:
                result.update(replica_lag_p99_ms=None, replica_lag_skipped=lag["skipped"])
                _say(f"replica_lag_p99_ms: skipped ({lag['skipped']})")
            else:
                rounded = {k: round(v, 1) for k, v in lag.items()}
                result.update(replica_lag_p99_ms=rounded["p99_ms"], replica_lag=rounded)
                _say(
                    f"replica_lag_p99_ms: {lag['p99_ms']:.1f} (p50 {lag['p50_ms']:.1f}, max {lag['max_ms']:.1f};"
                    f" {lag['issues']} Issues at {lag['issue_rate']:.0f}/s, {lag['errors']} errors)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["date"] = dt.date.today().isoformat()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
