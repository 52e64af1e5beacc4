"""`vimark serve --workers 2`: two processes share one port (SO_REUSEPORT), each with its own index
tailing the change log; health is SERVING only while both are ready; SIGTERM drains both."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from test_cli_walkthrough import VIMARK, health_status
from test_server_lifecycle import health

from conftest import MovableClock
from ports import free_port
from vimark.client.errors import FailedPrecondition
from vimark.client.sdk import VimarkClient
from vimark.server import pki
from vimark.server.app import ServerConfig, VimarkServer
from vimark.server.workers import SharedReadiness
from vimark.v1 import certificate_pb2
from vimark.v1 import mark_service_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING


class Workers:
    def __init__(self, process: subprocess.Popen[str], port: int, metrics_port: int, log: Path) -> None:
        self.process, self.port, self.metrics_port, self.log = process, port, metrics_port, log
        self.address = f"127.0.0.1:{port}"

    def worker_pids(self) -> dict[int, int]:
        """slot -> pid of the latest start of each worker, from the server's log."""
        found = re.findall(r"worker (\d+) \(pid (\d+)\) listening", self.log.read_text())
        return {int(slot): int(pid) for slot, pid in found}

    def verify_calls(self, slot: int) -> float:
        url = f"http://127.0.0.1:{self.metrics_port + slot}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        found = re.search(r'^vimark_rpc_seconds_count\{code="OK",rpc="Verify"\} (\S+)$', text, re.MULTILINE)
        return float(found[1]) if found else 0.0


def wait_serving(address: str, process: subprocess.Popen[str], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if health_status(address) == SERVING:
                return
        except grpc.RpcError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "not SERVING in time:\n" + log.read_text()
        time.sleep(0.1)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    port, metrics_port = free_port(), free_port(count=2)  # worker i serves metrics on metrics_port + i
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                *VIMARK,
                "serve",
                "--workers",
                "2",
                "--demo",
                "50",
                "--listen",
                f"127.0.0.1:{port}",
                "--metrics-port",
                str(metrics_port),
                "--shutdown-delay",
                "0.2",
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_serving(f"127.0.0.1:{port}", process, log)
        yield Workers(process, port, metrics_port, log)
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: the parent drains its workers
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_an_issue_through_one_worker_verifies_through_the_other_within_a_second(workers: Workers) -> None:
    assert set(workers.worker_pids()) == {0, 1}
    with VimarkClient(workers.address) as client:
        mark = client.issue(
            request_id=str(uuid.uuid4()),
            plate_number="京A00000",
            plate_type="02",
            reason=certificate_pb2.ISSUE_REASON_REDOWNLOAD,
        )
    issued_at = time.monotonic()
    before = [workers.verify_calls(0), workers.verify_calls(1)]
    late: list[int] = []  # verdicts of calls made a second or more after the Issue returned
    # Each new channel is a new connection, which the kernel hands to either worker.
    while len(late) < 20:
        with VimarkClient(workers.address) as client:
            started = time.monotonic()
            verdict = client.verify(mark.qr_text).verdict
        if started - issued_at >= 1.0:
            late.append(verdict)
    after = [workers.verify_calls(0), workers.verify_calls(1)]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)  # both workers answered
    assert set(late) == {pb.VERDICT_VALID}


def test_health_is_serving_only_while_every_worker_is_ready(
    sqlite_url: str, keys_dir: Path, clock: MovableClock
) -> None:
    """The flags workers share: this server (slot 0) loads its index, but says SERVING only once its
    sibling (slot 1, set by the test) is ready too, and NOT_SERVING again when the sibling is not."""
    flags = [0, 0]
    server = VimarkServer(
        ServerConfig(db_url=sqlite_url, keys_dir=keys_dir, listen="127.0.0.1:0", clock=clock, poll_interval=0.05),
        SharedReadiness(flags, 0),
    )
    server.start()
    try:
        server.wait_ready()
        assert flags[0] == 1
        time.sleep(0.3)
        assert health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        flags[1] = 1
        wait_for_health(server.port, SERVING)
        flags[1] = 0  # the sibling died; the parent starts it again
        wait_for_health(server.port, health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        server.stop(grace=1)


def wait_for_health(port: int, status: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while health(port) != status:
        assert time.monotonic() < deadline, f"health did not become {status}"
        time.sleep(0.02)


def test_a_dead_worker_is_started_again_and_sigterm_drains_them_all(workers: Workers) -> None:
    pids = workers.worker_pids()
    os.kill(pids[1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while workers.worker_pids()[1] == pids[1]:
        assert time.monotonic() < deadline, workers.log.read_text()
        time.sleep(0.05)
    wait_serving(workers.address, workers.process, workers.log, timeout=30)
    with VimarkClient(workers.address) as client:
        assert client.lookup(plate_number="京A00000", plate_type="02").plate_number == "京A00000"
    survivors = workers.worker_pids()
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(timeout=30) == 0
    for pid in survivors.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def verdicts_on_both_workers(workers: Workers, qr_text: str, want: int, timeout: float = 10) -> None:
    """Verify on fresh connections (the kernel spreads them over the workers) until every answer is
    `want` and both workers have given some of them (counted from their own metrics)."""
    deadline = time.monotonic() + timeout
    while True:
        before = [workers.verify_calls(0), workers.verify_calls(1)]
        verdicts = set()
        for _ in range(16):
            with VimarkClient(workers.address) as client:
                verdicts.add(client.verify(qr_text).verdict)
        after = [workers.verify_calls(0), workers.verify_calls(1)]
        if verdicts == {want} and all(a > b for a, b in zip(after, before, strict=True)):
            return
        assert time.monotonic() < deadline, (verdicts, before, after)
        time.sleep(0.1)  # a worker re-reads the key directory and the change log every 0.2 s


def issue_demo_mark(workers: Workers, request_id: str, timeout: float = 10) -> pb.IssueResponse:
    """Issue for the demo's first plate; a worker that has not yet seen a new key answers NO_ACTIVE_KEY."""
    deadline = time.monotonic() + timeout
    with VimarkClient(workers.address) as client:
        while True:
            try:
                return client.issue(
                    request_id=request_id,
                    plate_number="京A00000",
                    plate_type="02",
                    reason=certificate_pb2.ISSUE_REASON_REDOWNLOAD,
                )
            except FailedPrecondition as exc:
                assert exc.reason == "NO_ACTIVE_KEY" and time.monotonic() < deadline, exc
                time.sleep(0.1)


def test_key_compromise_drill_on_every_worker(workers: Workers, tmp_path: Path) -> None:
    """The runbook in docs/security.md: revoke the stolen key, every mark it signed reads REVOKED on
    every worker within a poll interval; rotate, and new marks are issued under the new key and
    verify everywhere."""
    keys = tmp_path / "vimark-keys"
    old = issue_demo_mark(workers, "before-compromise")
    assert old.key_id == 1
    revoke = subprocess.run([*VIMARK, "keys", "revoke", "1", str(keys)], capture_output=True, text=True, timeout=60)
    assert revoke.returncode == 0, revoke.stderr
    verdicts_on_both_workers(workers, old.qr_text, pb.VERDICT_REVOKED)
    rotate = subprocess.run([*VIMARK, "keys", "rotate", str(keys)], capture_output=True, text=True, timeout=60)
    assert rotate.returncode == 0, rotate.stderr
    new = issue_demo_mark(workers, "after-rotation")
    assert new.key_id == 2 and new.serial == old.serial  # the same mark, signed afresh with the new key
    verdicts_on_both_workers(workers, new.qr_text, pb.VERDICT_VALID)
    verdicts_on_both_workers(workers, old.qr_text, pb.VERDICT_REVOKED)


def test_workers_refuse_a_port_another_server_holds(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = subprocess.run(
            [*VIMARK, "serve", "--workers", "2", "--listen", f"127.0.0.1:{port}", "--metrics-port", "0"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2 and "cannot listen on" in run.stderr, run.stderr[-2000:]


def test_a_worker_that_cannot_start_stops_the_server_instead_of_looping(tmp_path: Path) -> None:
    # Files the start-up checks accept (they exist; the server's certificate and key match) but every
    # worker fails on: a CRL that is not one.
    pki.init(tmp_path / "pki")
    (tmp_path / "broken.pem").write_text("not a CRL")
    run = subprocess.run(
        [
            *VIMARK,
            "serve",
            "--workers",
            "2",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--metrics-port",
            "0",
            "--tls-cert",
            str(tmp_path / "pki" / "server.pem"),
            "--tls-key",
            str(tmp_path / "pki" / "server.key"),
            "--client-ca",
            str(tmp_path / "pki" / "ca.pem"),
            "--client-crl",
            str(tmp_path / "broken.pem"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and "stopping" in run.stderr, run.stderr[-2000:]
