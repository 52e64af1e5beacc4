"""`vimark serve --workers 2`: two processes share one port (SO_REUSEPORT), each with its own index
tailing the change log; health is SERVING only while both are ready; SIGTERM drains both."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from test_cli_walkthrough import VIMARK, free_port, health_status

from vimark.client.sdk import VimarkClient
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
    port, metrics_port = free_port(), free_port()
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


def test_health_waits_for_every_worker_and_sigterm_drains_them_all(workers: Workers) -> None:
    pids = workers.worker_pids()
    # A worker that dies is started again; until it has loaded its index, no worker says SERVING.
    os.kill(pids[1], signal.SIGKILL)
    statuses: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            statuses.append(health_status(workers.address))
        except grpc.RpcError:
            pass
        if workers.worker_pids()[1] != pids[1] and statuses and statuses[-1] == SERVING:
            break
        time.sleep(0.02)
    assert workers.worker_pids()[1] != pids[1], workers.log.read_text()
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses, statuses
    assert statuses[-1] == SERVING
    survivors = workers.worker_pids()
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(timeout=30) == 0
    for pid in survivors.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
