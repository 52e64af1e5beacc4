"""PostgreSQL goes away and comes back: the server runs against the database through a TCP proxy
the test cuts and restores (tests/tcp_proxy.py).

Principle 2: while the database is gone, Verify and LookupVehicleStatus answer from the index;
Issue fails fast with UNAVAILABLE instead of hanging; the index holds its last state. Principle 1:
once the database is back, the server catches up from the change log, without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url
from tcp_proxy import TcpProxy

from conftest import MovableClock, start_server, vehicle
from vimark.client.domain import status_bits
from vimark.client.sdk import VimarkClient
from vimark.server.app import ServerConfig, VimarkServer
from vimark.server.index import ValidityIndex
from vimark.server.store import Store
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc

# PostgreSQL only: a SQLite file cannot be cut off from its server.
pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

CONNECT_TIMEOUT = 2.0  # the store's connect_timeout: anything that waits on the database takes this long
FAST = CONNECT_TIMEOUT + 1.0  # "fails fast" for a write: one connect attempt, then UNAVAILABLE


@pytest.fixture
def proxy(db_url: str) -> Iterator[TcpProxy]:
    url = make_url(db_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as p:
        yield p


def through(db_url: str, proxy: TcpProxy) -> str:
    return make_url(db_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def registration(request_id: str, plate: str) -> pb.IssueRequest:
    return pb.IssueRequest(
        request_id=request_id, plate_number=plate, plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
    )


def verdict(client: VimarkClient, qr_text: str) -> int:
    started = time.monotonic()
    answer = client.verify(qr_text).verdict
    assert time.monotonic() - started < CONNECT_TIMEOUT / 2, "Verify waited on the database"
    return answer


def test_verify_survives_a_database_outage_and_catches_up_after_it(
    db_url: str, proxy: TcpProxy, keys_dir: Path, clock: MovableClock
) -> None:
    server = start_server(through(db_url, proxy), keys_dir, clock, poll_interval=0.1)
    direct = Store(db_url)  # another writer on the database, not behind the proxy
    try:
        with VimarkClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            client.upsert_vehicles(
                [vehicle(f"闽C0000{i}", vin=f"LSVAB2BJ5KN00000{i}", registered_on="2026-11-02") for i in range(1, 4)]
            )
            a = client.issue(
                request_id="a", plate_number="闽C00001", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            b = client.issue(
                request_id="b", plate_number="闽C00002", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            assert verdict(client, a.qr_text) == verdict(client, b.qr_text) == pb.VERDICT_VALID
            change_id = server.index.last_change_id

            # 1. The database disappears: open connections are reset, new ones are never answered.
            proxy.cut()
            time.sleep(0.3)  # the background tail has met the outage
            assert verdict(client, a.qr_text) == pb.VERDICT_VALID
            started = time.monotonic()
            standing = client.lookup(plate_number="闽C00001", plate_type="02")
            assert time.monotonic() - started < CONNECT_TIMEOUT / 2, "LookupVehicleStatus waited on the database"
            assert standing.within_validity and standing.valid_until == a.valid_until

            # 2. Issue fails fast with UNAVAILABLE, twice (one attempt each: a channel without the
            # SDK's retries), rather than hanging on a connection that is never answered.
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.MarkServiceStub(channel)
                for attempt in ("c-1", "c-2"):
                    started = time.monotonic()
                    with pytest.raises(grpc.RpcError) as failed:
                        stub.Issue(registration(attempt, "闽C00003"), timeout=60)
                    elapsed = time.monotonic() - started
                    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
                    assert elapsed < FAST, f"Issue took {elapsed:.1f}s to fail with the database gone"
                # Right after a failure, Issues fail at once (no connect attempt each), so a stream
                # of them cannot hold every handler thread while Verify waits.
                for attempt in range(20):
                    started = time.monotonic()
                    with pytest.raises(grpc.RpcError) as failed:
                        stub.Issue(registration(f"d-{attempt}", "闽C00003"), timeout=60)
                    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
                    if time.monotonic() - started < 0.2:
                        break
                else:
                    pytest.fail("no Issue failed fast after the database stopped answering")

            # 3. Meanwhile the database changes: vehicle 1 stolen, mark b revoked. Not seen yet.
            direct.set_status("02", "闽C00001", status_bits("C"))
            direct.revoke_mark(b.serial, "stolen paper")
            time.sleep(0.5)  # five poll intervals
            assert verdict(client, a.qr_text) == verdict(client, b.qr_text) == pb.VERDICT_VALID
            assert server.index.last_change_id == change_id

            # 4. The database comes back: the change log is tailed without a restart.
            proxy.restore()
            restored = time.monotonic()
            while (verdict(client, a.qr_text), verdict(client, b.qr_text)) != (
                pb.VERDICT_VEHICLE_BLOCKED,
                pb.VERDICT_REVOKED,
            ):
                assert time.monotonic() - restored < 3.0, "the index did not catch up after the database came back"
                time.sleep(0.05)

            # 5. Issue works again, and nothing attempted during the outage was written.
            assert direct.mark_by_request_id("c-1") is None and direct.mark_by_request_id("c-2") is None
            c = client.issue(
                request_id="c-1", plate_number="闽C00003", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            assert not c.replayed
            assert verdict(client, c.qr_text) == pb.VERDICT_VALID
            scratch = ValidityIndex()
            scratch.load(*direct.snapshot())
            assert server.index.checksum() == scratch.checksum()
    finally:
        server.stop(grace=1)
        direct.close()


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status)


def test_a_server_started_while_the_database_is_down_serves_once_it_is_back(
    db_url: str, proxy: TcpProxy, keys_dir: Path, clock: MovableClock
) -> None:
    proxy.cut("refuse")  # a new database, not yet migrated, behind a network that is down
    config = ServerConfig(db_url=through(db_url, proxy), keys_dir=keys_dir, listen="127.0.0.1:0", clock=clock)
    server = VimarkServer(config)
    try:
        server.start()
        time.sleep(0.5)
        assert _health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        proxy.restore()
        server.wait_ready(timeout=5)  # the load is retried every second
        deadline = time.monotonic() + 2
        while _health(server.port) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:  # migrated, and writable
            client.upsert_vehicles([vehicle("闽C00001", registered_on="2026-11-02")])
            mark = client.issue(
                request_id="r1", plate_number="闽C00001", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            assert client.verify(mark.qr_text).verdict == pb.VERDICT_VALID
    finally:
        server.stop(grace=1)
