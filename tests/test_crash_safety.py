"""Crash safety (principle 1): `vimark serve` is SIGKILLed in the middle of a stream of concurrent
Issue calls, then restarted on the same database.

Nothing acknowledged is lost (every Issue that returned OK is in the store and verifies as VALID,
or SUPERSEDED by a later mark of its vehicle); retrying any request_id never makes a second mark;
and the restarted server's index, loaded at start and then kept current incrementally, is the one
a scratch build from the store gives (its checksum, scraped from the metrics endpoint)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select

from conftest import vehicle
from ports import free_port
from vimark.client.errors import Unavailable
from vimark.client.sdk import VimarkClient
from vimark.server.index import ValidityIndex
from vimark.server.store import MarkRow, Store
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

VIMARK = [sys.executable, "-m", "vimark.server.cli.main"]
PLATES = [f"闽C{i:05d}" for i in range(6)]  # few vehicles: most Issues supersede an earlier mark
WORKERS = 6
ACKED_BEFORE_KILL = 60  # the kill lands after this many Issues returned OK, while more are in flight


class Served:
    """One `vimark serve` process in development mode (any role) on loopback."""

    def __init__(self, db_url: str, keys: Path, workdir: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = open(workdir / f"serve-{self.port}.log", "w+")
        self.process = subprocess.Popen(
            [
                *VIMARK,
                "serve",
                "--db",
                db_url,
                "--keys",
                str(keys),
                "--listen",
                self.address,
                "--metrics-port",
                str(self.metrics_port),
                "--shutdown-delay",
                "0",
            ],
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 60  # generous: only a failure waits this long
        while not self._serving():
            assert self.process.poll() is None, f"vimark serve exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"vimark serve did not become SERVING:\n{self.output()}"
            time.sleep(0.1)

    def _serving(self) -> bool:
        try:
            with grpc.insecure_channel(self.address) as channel:
                check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(check.status == health_pb2.HealthCheckResponse.SERVING)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found, f"{name} is not exported"
        return float(found.group(1))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


@dataclass
class Outcome:
    request_id: str
    plate: str
    response: pb.IssueResponse | None  # None: no answer (failed, or in flight at the kill)


def issue(client: VimarkClient, request_id: str, plate: str) -> pb.IssueResponse:
    return client.issue(
        request_id=request_id, plate_number=plate, plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
    )


def issue_until_killed(served: Served, kill_after: int) -> list[Outcome]:
    """WORKERS threads issue until their server dies; the main thread kills it once kill_after
    Issues have returned OK. Every third request is sent twice, the second time as a retry."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    acked = threading.Semaphore(0)
    surprises: list[BaseException] = []

    def work(worker: int) -> None:
        with VimarkClient(served.address, timeout=5) as client:
            for n in range(10_000):
                request_id, plate = f"w{worker}-{n}", PLATES[(worker + n) % len(PLATES)]
                response: pb.IssueResponse | None = None
                try:
                    response = issue(client, request_id, plate)
                    assert not response.replayed, request_id
                    if n % 3 == 0:  # a client that lost the answer retries: the same mark, replayed
                        again = issue(client, request_id, plate)
                        assert (again.replayed, again.serial, again.qr_text) == (
                            True,
                            response.serial,
                            response.qr_text,
                        )
                except Unavailable:  # the server is gone (killed before or during this call)
                    with lock:
                        outcomes.append(Outcome(request_id, plate, response))
                    return
                except BaseException as exc:  # anything else is a failure of the test
                    with lock:
                        surprises.append(exc)
                    return
                with lock:
                    outcomes.append(Outcome(request_id, plate, response))
                acked.release()

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(WORKERS)]
    for thread in threads:
        thread.start()
    for _ in range(kill_after):
        assert acked.acquire(timeout=20), f"Issues stalled before the kill:\n{served.output()}"
    served.kill()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a client hung after the server died"
    if surprises:
        raise surprises[0]
    return outcomes


def scratch_index(db_url: str) -> ValidityIndex:
    store = Store(db_url)
    try:
        index = ValidityIndex()
        index.load(*store.snapshot())
        return index
    finally:
        store.close()


def assert_index_matches_the_store(served: Served, db_url: str) -> None:
    """The served index, once at the store's last change id, is the one a scratch build gives."""
    scratch = scratch_index(db_url)
    deadline = time.monotonic() + 5
    while served.metric("vimark_index_change_id") != scratch.last_change_id:
        assert time.monotonic() < deadline, "the restarted server did not reach the store's last change id"
        time.sleep(0.05)
    assert served.metric("vimark_index_checksum") == int(scratch.checksum()[:13], 16)
    assert served.metric("vimark_index_vehicles") == len(scratch) == len(PLATES)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"  # created by the first `vimark serve`, reused by the restart


@pytest.fixture
def served_processes() -> Iterator[list[Served]]:
    processes: list[Served] = []
    yield processes
    for process in processes:
        process.stop()


def test_sigkill_during_issues_loses_nothing_acknowledged(
    db_url: str, keys: Path, tmp_path: Path, served_processes: list[Served]
) -> None:
    first = Served(db_url, keys, tmp_path)
    served_processes.append(first)
    with VimarkClient(first.address, timeout=10) as client:
        client.upsert_vehicles(
            [vehicle(p, vin=f"LSVAB2BJ5KN{i:06d}", registered_on="2026-11-02") for i, p in enumerate(PLATES)]
        )

    # 1. A stream of concurrent Issues; SIGKILL lands in the middle of it.
    outcomes = issue_until_killed(first, ACKED_BEFORE_KILL)
    acked = {o.request_id: o for o in outcomes if o.response is not None}
    unanswered = [o for o in outcomes if o.response is None]
    assert len(acked) >= ACKED_BEFORE_KILL and 0 < len(unanswered) <= WORKERS

    # 2. Restart on the same database: it loads the index from the store.
    again = Served(db_url, keys, tmp_path)
    served_processes.append(again)
    assert_index_matches_the_store(again, db_url)

    # 3. Every acknowledged mark is in the store; no request_id has more than one mark, and
    # the store holds no mark that was not asked for.
    store = Store(db_url)
    try:
        for request_id, outcome in acked.items():
            stored = store.mark_by_request_id(request_id)
            assert outcome.response is not None and stored is not None, f"acknowledged Issue {request_id} was lost"
            assert (stored.serial, stored.qr_text) == (outcome.response.serial, outcome.response.qr_text)
        in_flight = {o.request_id: store.mark_by_request_id(o.request_id) for o in unanswered}
        with store.engine.connect() as conn:
            marks = conn.execute(select(func.count()).select_from(MarkRow)).scalar_one()
            distinct = conn.execute(select(func.count(func.distinct(MarkRow.request_id)))).scalar_one()
        assert marks == distinct == len(acked) + sum(m is not None for m in in_flight.values())
    finally:
        store.close()
    newest: dict[str, int] = {}  # plate -> the newest mark stored (acknowledged or not)
    for serial, plate in [(o.response.serial, o.plate) for o in acked.values() if o.response] + [
        (m.serial, m.plate_number) for m in in_flight.values() if m
    ]:
        newest[plate] = max(newest.get(plate, 0), serial)

    with VimarkClient(again.address, timeout=10) as client:
        # 4. Each acknowledged mark verifies: VALID if it is the newest mark of its vehicle, else
        # SUPERSEDED, and the restarted index names the newest stored mark as the current one.
        for outcome in acked.values():
            assert outcome.response is not None
            result = client.verify(outcome.response.qr_text)
            assert result.current_serial == newest[outcome.plate], outcome.request_id
            expected = pb.VERDICT_VALID if outcome.response.serial == newest[outcome.plate] else pb.VERDICT_SUPERSEDED
            assert result.verdict == expected, (outcome.request_id, result)

        # 5. Retrying every request_id, acknowledged or not, makes no second mark. An unanswered
        # Issue that had committed before the kill is replayed; one that had not is issued now
        # (the restarted server's index applies that change incrementally).
        for request_id, outcome in acked.items():
            assert outcome.response is not None
            retried = issue(client, request_id, outcome.plate)
            assert (retried.replayed, retried.serial, retried.qr_text) == (
                True,
                outcome.response.serial,
                outcome.response.qr_text,
            )
        for outcome in unanswered:
            retried = issue(client, outcome.request_id, outcome.plate)
            committed = in_flight[outcome.request_id]
            assert retried.replayed == (committed is not None)
            if committed is not None:
                assert retried.serial == committed.serial
            again_retried = issue(client, outcome.request_id, outcome.plate)
            assert (again_retried.replayed, again_retried.serial) == (True, retried.serial)

        # 6. More changes through the restarted server, applied incrementally: new marks, a
        # status change, a revocation.
        fresh = [issue(client, f"after-{i}", PLATES[i % len(PLATES)]) for i in range(8)]
        client.set_status(plate_number=PLATES[0], plate_type="02", status_codes="C")
        client.revoke_mark(fresh[1].serial, "crash-safety test")
        assert client.verify(fresh[1].qr_text).verdict == pb.VERDICT_REVOKED
        assert client.verify(fresh[6].qr_text).verdict == pb.VERDICT_VEHICLE_BLOCKED
        assert client.verify(fresh[7].qr_text).verdict == pb.VERDICT_VALID
    assert_index_matches_the_store(again, db_url)

    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            marks = conn.execute(select(func.count()).select_from(MarkRow)).scalar_one()
        assert marks == len(acked) + len(unanswered) + len(fresh)  # one per request_id, no more
    finally:
        store.close()
