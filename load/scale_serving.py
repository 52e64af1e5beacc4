"""Servers for load.scale: start one and time it, its memory, its rates, the bulk paths, replica lag."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import sqlite3
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import loadgen
from load.bench import harness
from load.bench.harness import ROOT, free_port, scratch_postgres, vimark_executable
from load.scale_registry import SEED, TRANSFER, Registry, say
from vimark.client.domain import china_date, month_of, system_clock
from vimark.server.demo import demo_vehicles
from vimark.server.store import Store
from vimark.v1 import certificate_pb2
from vimark.v1 import mark_service_pb2 as pb


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


def node_memory(pid: int) -> tuple[int, int]:
    """(sum of VmRSS, sum of Pss) over a process and its descendants: RSS counts a page shared by
    workers (the mapped checkpoint text) once per process, Pss splits it among them."""
    rss = pss = 0
    pending = [pid]
    while pending:
        p = pending.pop()
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name == "Rss":
                    rss += int(value.split()[0]) * 1024
                elif name == "Pss":
                    pss += int(value.split()[0]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return rss, pss


@contextlib.contextmanager
def serve(db_url: str, keys: Path, log: Path, role: str | None = None, workers: int = 1) -> Iterator[Server]:
    """`vimark serve` on `db_url` (development mode, a free port) until the block ends, timed from
    its start to SERVING (up to 900 s: a province read from the store)."""
    target = f"127.0.0.1:{free_port()}"
    command = [*vimark_executable(), "serve", "--db", db_url, "--keys", str(keys), "--listen", target]
    command += ["--metrics-port", "0", "--shutdown-delay", "0"]
    if role:
        command += ["--role", role]
    if workers > 1:
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    with harness.serve(command, target, log, timeout=900) as served:
        yield Server(target, served.process, time.perf_counter() - started)


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
        say(f"    {method} errors: {dict(result.errors)}")
    return result.rate


@dataclass
class Measured:
    cold_start_s: float  # from the store (no checkpoint yet: the start writes one)
    rss: int
    hwm: int
    checkpoint_start_s: float  # the next start, from the checkpoint the first one wrote
    checkpoint_rss: int
    checkpoint_hwm: int


def measure(reg: Registry | None, keys: Path, work: Path, label: str) -> Measured:
    """Two starts of one server: from the store (it writes the checkpoint), then from that checkpoint."""
    db = _private_copy(reg, keys, work / label)
    shutil.rmtree(db.with_name(db.name + ".index"), ignore_errors=True)  # `serve`'s default checkpoint dir
    with serve(f"sqlite:///{db}", keys, work / f"{label}.log") as server:
        time.sleep(1.0)  # settled: what a SERVING node holds
        rss, hwm = server.memory()
        mib = f"VmRSS {rss / 2**20:,.1f} MiB, VmHWM {hwm / 2**20:,.1f} MiB"
        say(f"  [{label}] SERVING from the store after {server.cold_start_s:.2f}s, {mib}")
    with serve(f"sqlite:///{db}", keys, work / f"{label}-again.log") as again:
        time.sleep(1.0)
        ck_rss, ck_hwm = again.memory()
        mib = f"VmRSS {ck_rss / 2**20:,.1f} MiB, VmHWM {ck_hwm / 2**20:,.1f} MiB"
        say(f"  [{label}] SERVING from the checkpoint after {again.cold_start_s:.2f}s, {mib}")
    return Measured(server.cold_start_s, rss, hwm, again.cold_start_s, ck_rss, ck_hwm)


@dataclass
class Rates:
    verify: list[float]  # one per round, at N
    lookup: list[float]
    verify_reference: list[float]  # the same rounds at the reference size
    lookup_reference: list[float]
    rss_after_use: int  # VmRSS of the N server after every round (the text pages lookups touched)


def rates(big: Registry, small: Registry, work: Path, seconds: float, rounds: int) -> Rates:
    """Verify and Lookup at N and at the reference size, both servers up (from their checkpoints),
    alternating run by run, so the machine's drift falls on both alike."""
    n, ref = f"n{big.vehicles}", f"n{small.vehicles}"
    out = Rates([], [], [], [], 0)
    with (
        serve(f"sqlite:///{work / n / 'vimark.db'}", big.keys, work / f"{n}-rates.log") as a,
        serve(f"sqlite:///{work / ref / 'vimark.db'}", small.keys, work / f"{ref}-rates.log") as b,
    ):
        for _ in range(rounds):
            for reg, server, verify, lookup in (
                (big, a, out.verify, out.lookup),
                (small, b, out.verify_reference, out.lookup_reference),
            ):
                verify.append(_rate(server.target, "Verify", _verify_requests(reg), seconds, work))
                lookup.append(_rate(server.target, "LookupVehicleStatus", _lookup_requests(reg), seconds, work))
                say(f"  [n{reg.vehicles}] Verify {verify[-1]:,.0f}/s, LookupVehicleStatus {lookup[-1]:,.0f}/s")
        out.rss_after_use = a.memory()[0]
    return out


# -- the bulk paths: registry import and backfill -----------------------------------------------
IMPORT_AT_MOST = 1_000_000  # vehicles imported through `vimark vehicles import` to time it
BACKFILL_PLATES = 50_000  # vehicles offered to BackfillMarks (its most per call) to time it


def _registry_csv(reg: Registry, path: Path, limit: int) -> int:
    """The registry's first `limit` vehicles as the CSV `vimark vehicles import` reads."""
    from vimark.client.domain import format_month, status_letters

    with sqlite3.connect(reg.db) as conn, path.open("w", encoding="utf-8") as out:
        out.write("plate_number,plate_type,vin,category,registered_on,valid_until,status\n")
        rows = conn.execute(
            "SELECT plate_number, plate_type, vin, category, registered_on, valid_until, status_bits"
            " FROM vehicles ORDER BY id LIMIT ?",
            (limit,),
        )
        n = 0
        for plate, plate_type, vin, category, registered, valid_until, bits in rows:
            month = format_month(valid_until) if valid_until else ""
            out.write(
                f"{plate},{plate_type},{vin},{category},{registered},{month},{status_letters(bits) if bits else ''}\n"
            )
            n += 1
    return n


@dataclass(frozen=True)
class FirstLoad:
    """A province's first load, timed: the registry imported (Issues answered meanwhile), then
    every vehicle's first mark."""

    imported: int
    import_s: float
    backfilled: int  # marks issued by the full backfill
    backfill_s: float
    issue_ms: list[float]  # each granted Issue's latency while the import ran, in order
    issue_errors: int


ISSUES_DURING_IMPORT = 20.0  # Issues a second, one at a time, while the import runs


def first_load(reg: Registry, keys: Path, work: Path) -> FirstLoad:
    """`vimark vehicles import` of the registry's first vehicles (at most IMPORT_AT_MOST) into an
    empty server on a SQLite file (each batch durable before it is acknowledged), while another
    client issues TRANSFER marks for vehicles imported first and times each (the import must not
    hold the write lock from Issue for more than about 100 ms); then, on the same server, `vimark
    marks backfill` of all of them: a mark for every vehicle within its validity, the registry
    read in id order (what a province's first issuance does)."""
    csv_file = work / "registry.csv"
    n = _registry_csv(reg, csv_file, min(reg.vehicles, IMPORT_AT_MOST))
    current = month_of(china_date(system_clock()))
    with sqlite3.connect(reg.db) as conn:  # within validity and no status: a TRANSFER is granted
        plates = conn.execute(
            "SELECT plate_type, plate_number FROM vehicles WHERE id <= 20000 AND status_bits = 0"
            " AND valid_until >= ? ORDER BY id",
            (current,),
        ).fetchall()
    db = _private_copy(None, keys, work / "import")
    with serve(f"sqlite:///{db}", keys, work / "import.log") as server:
        importing = threading.Event()
        importing.set()
        issued: list[float] = []
        errors: list[str] = []
        probe = threading.Thread(target=_issue_while, args=(server.target, plates, importing, issued, errors))
        probe.start()
        try:
            import_s = _timed_command(["vehicles", "import", str(csv_file), "--server", server.target])
        finally:
            importing.clear()
            probe.join()
        backfill_s = _timed_command(["marks", "backfill", "--server", server.target, "--timeout", "3600", "--json"])
    with sqlite3.connect(db) as conn:
        backfilled = conn.execute(
            "SELECT count(*) FROM marks WHERE reason = ?", (certificate_pb2.ISSUE_REASON_BACKFILL,)
        ).fetchone()
    return FirstLoad(n, import_s, int(backfilled[0]), backfill_s, issued, len(errors))


def _issue_while(
    target: str, plates: list[tuple[str, str]], running: threading.Event, latencies: list[float], errors: list[str]
) -> None:
    """Issue a mark for each plate in turn, ISSUES_DURING_IMPORT a second, while `running`; the
    first 2 s are left to the import (its first batches hold these vehicles)."""
    from vimark.client.errors import VimarkError
    from vimark.client.sdk import VimarkClient

    time.sleep(2.0)
    with VimarkClient(target) as client:
        for i, (plate_type, plate_number) in enumerate(plates):
            if not running.is_set():
                return
            started = time.perf_counter()
            try:
                client.issue(
                    request_id=f"scale-import-{i}", plate_type=plate_type, plate_number=plate_number, reason=TRANSFER
                )
            except VimarkError as exc:  # counted apart: a refusal's latency is not an Issue's
                errors.append(str(exc))
            else:
                latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(1 / ISSUES_DURING_IMPORT)


def _timed_command(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([*vimark_executable(), *args], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"vimark {' '.join(args[:2])} failed: {done.stderr[-2000:]}")
    return seconds


def backfill_rate(reg: Registry, work: Path) -> tuple[int, float]:
    """(marks issued, seconds) of BackfillMarks for 50,000 plates spread over the registry, on the
    N-vehicle server (from its checkpoint): the rate per mark on a province-sized store, the
    signing pool's start included."""
    from vimark.client.sdk import VimarkClient

    label = f"n{reg.vehicles}"
    step = max(1, reg.vehicles // BACKFILL_PLATES)
    with sqlite3.connect(reg.db) as conn:  # an even sample across the registry, one call's worth
        plates = conn.execute(
            "SELECT plate_type, plate_number FROM vehicles WHERE id % ? = 0 LIMIT ?", (step, BACKFILL_PLATES)
        ).fetchall()
    with serve(f"sqlite:///{work / label / 'vimark.db'}", reg.keys, work / f"{label}-backfill.log") as server:
        with VimarkClient(server.target) as client:
            started = time.perf_counter()
            progress = list(client.backfill_marks(plates))
            seconds = time.perf_counter() - started
    last = progress[-1]
    issued = {c.outcome: c.count for c in last.counts}.get(pb.BACKFILL_OUTCOME_ISSUED, 0)
    return issued, seconds


def _verify_requests(reg: Registry) -> list[bytes]:
    return [pb.VerifyRequest(qr_text=m).SerializeToString() for m in reg.marks]


def _lookup_requests(reg: Registry) -> list[bytes]:
    return [pb.LookupVehicleStatusRequest(plate_type=t, plate_number=p).SerializeToString() for t, p in reg.plates]


def measure_workers(reg: Registry | None, keys: Path, work: Path, label: str) -> tuple[int, int]:
    """(node RSS, node Pss) of `serve --workers 2` started from the checkpoint `measure` left."""
    db = work / label / "vimark.db"
    if reg is None:
        db = _private_copy(None, keys, work / label)
    with serve(f"sqlite:///{db}", keys, work / f"{label}-workers.log", workers=2) as server:
        time.sleep(2.0)
        rss, pss = node_memory(server.process.pid)
        say(f"  [{label}] --workers 2: node RSS {rss / 2**20:,.1f} MiB, Pss {pss / 2**20:,.1f} MiB")
    return rss, pss


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
            issuers = ThreadPoolExecutor(
                32
            )  # Issues in flight together: the offered rate, not one Issue's latency, paces them
            tag = os.urandom(4).hex()
            sent = 0

            def issue(i: int) -> None:
                nonlocal sent
                v = eligible[i % len(eligible)]
                request = pb.IssueRequest(
                    request_id=f"lag-{tag}-{i}", plate_type=v.plate_type, plate_number=v.plate_number, reason=TRANSFER
                )
                try:
                    response = issue_stub.Issue(request, timeout=10)
                except grpc.RpcError as exc:
                    with lock:
                        errors.append(f"Issue: {exc.code().name}")  # type: ignore[attr-defined]
                    return
                issued_at = time.perf_counter()
                with lock:
                    sent += 1
                lookup = pb.LookupVehicleStatusRequest(plate_type=v.plate_type, plate_number=v.plate_number)
                pool.submit(follow, lookup, response.serial, issued_at)

            started = time.perf_counter()
            for i in range(issues):
                due = started + i / rate
                if (pause := due - time.perf_counter()) > 0:
                    time.sleep(pause)
                issuers.submit(issue, i)
            issuers.shutdown(wait=True)
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
