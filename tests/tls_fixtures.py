"""TLS fixtures shared by the tests of roles and of the call guard: a development PKI with one
certificate per role, a TLS server, clients connected as each role, and one issued mark."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import MovableClock, start_server, vehicle
from ports import free_port
from vimark.client.sdk import VimarkClient, tls_credentials
from vimark.server import pki
from vimark.server.app import TlsConfig, VimarkServer
from vimark.server.policy import DEFAULT_RATES, Rate, Role
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

PLATE = {"plate_number": "闽C12345", "plate_type": "02"}
CALLERS = {
    Role.POLICE: "TX-0001",
    Role.PUBLIC: "app-7",
    Role.PARTNER: "insurer-3",
    Role.STATION: "station-12",
    Role.REGISTRATION: "vao-1",
    Role.OWNER_SERVICE: "owner-app",
    Role.OPERATOR: "ops-1",
}


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init(directory)
    for role, caller_id in CALLERS.items():
        pki.issue(directory, role, caller_id)
    pki.issue(directory, Role.POLICE, "TX-0002")
    return directory


@pytest.fixture
def tls_server(sqlite_url: str, keys_dir: Path, clock: MovableClock, pki_dir: Path) -> Iterator[VimarkServer]:
    rates = {**DEFAULT_RATES, Role.PUBLIC: Rate(0.5, 10)}
    tls = TlsConfig(pki_dir / "server.pem", pki_dir / "server.key", pki_dir / "ca.pem")
    server = start_server(sqlite_url, keys_dir, clock, tls=tls, rate_limits=rates, metrics_port=free_port())
    yield server
    server.stop(grace=1)


Connect = Callable[..., VimarkClient]


@pytest.fixture
def connect(tls_server: VimarkServer, pki_dir: Path) -> Iterator[Connect]:
    opened: list[VimarkClient] = []

    def open_as(role: Role, caller_id: str | None = None) -> VimarkClient:
        name = f"{role.value}-{caller_id or CALLERS[role]}"
        credentials = tls_credentials(pki_dir / "ca.pem", pki_dir / f"{name}.pem", pki_dir / f"{name}.key")
        client = VimarkClient(f"127.0.0.1:{tls_server.port}", timeout=10, credentials=credentials)
        opened.append(client)
        return client

    yield open_as
    for client in opened:
        client.close()


@pytest.fixture
def mark(connect: Connect, tls_server: VimarkServer) -> pb.IssueResponse:
    connect(Role.OPERATOR).upsert_vehicles([vehicle(registered_on="2026-11-02")])
    return connect(Role.REGISTRATION).issue(request_id="reg-1", reason=cpb.ISSUE_REASON_REGISTRATION, **PLATE)


