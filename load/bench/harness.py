"""What a benchmark starts and stops: `vimark serve` and echo servers as subprocesses (waited on
until SERVING over gRPC health), free loopback ports, scratch PostgreSQL databases."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
POSTGRES_URL = os.environ.get(
    "VIMARK_BENCH_POSTGRES", os.environ.get("VIMARK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            time.sleep(0.05)
    raise RuntimeError(f"server on {target} not SERVING after {timeout}s; its log:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve(command: list[str], target: str, log: Path, *, timeout: float = 120.0) -> Iterator[Served]:
    """Run `command` (a server listening on `target`, output to `log`) until the block ends: the
    block starts once it is SERVING (at most `timeout` seconds), and ends with SIGTERM (a server
    writes its index checkpoint then: up to 30 s is waited for)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_serving(target, process, log, timeout)
        yield Served(target, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


VIMARK_IN_PYTHON = [sys.executable, "-c", "from vimark.server.cli.main import main; main()"]  # `vimark`, run by Python


def vimark_executable() -> list[str]:
    exe = shutil.which("vimark")
    return [exe] if exe else VIMARK_IN_PYTHON


def vimark_command(
    db_url: str, keys: Path, listen: str, role: str, workers: int, *, executable: list[str] | None = None
) -> list[str]:
    """`vimark serve` in development mode (no TLS, every caller gets `role`) on loopback;
    `executable` in place of the `vimark` script (VIMARK_IN_PYTHON where Python itself must run)."""
    command = [*(executable or vimark_executable()), "serve", "--db", db_url, "--keys", str(keys), "--listen", listen]
    command += ["--metrics-port", "0", "--role", role, "--shutdown-delay", "0"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def echo_command(listen: str, kind: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "load.echo", "--listen", listen, "--kind", kind, "--workers", str(workers)]


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
