"""Server lifecycle and plumbing: health before and after the index loads, schema migrations
matching the models, SDK retries, concurrent retries of one Issue."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import MovableClock, start_server, vehicle
from vimark.client.domain import VehicleCategory
from vimark.client.sdk import VimarkClient
from vimark.server.app import ServerConfig, VimarkServer
from vimark.server.records import VehicleRecord
from vimark.server.store import Base, Store
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc


def health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def test_not_serving_until_the_index_is_loaded(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> None:
    server = VimarkServer(
        ServerConfig(db_url=sqlite_url, keys_dir=keys_dir, listen="127.0.0.1:0", clock=clock, demo_vehicles=50)
    )
    gate = threading.Event()
    load = server.sync.load
    server.sync.load = lambda: (gate.wait(10), load())[1]  # type: ignore[method-assign]
    server.start()
    try:
        assert health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        with VimarkClient(f"127.0.0.1:{server.port}") as client, pytest.raises(Exception, match="still loading"):
            client.verify("VM1:00")
        gate.set()
        server.wait_ready()
        assert health(server.port) == health_pb2.HealthCheckResponse.SERVING
        assert len(server.index) == 50  # the demo vehicles were seeded before loading
    finally:
        gate.set()
        server.stop(grace=1)
    assert health_status_after_stop(server) == health_pb2.HealthCheckResponse.NOT_SERVING


def health_status_after_stop(server: VimarkServer) -> int:
    response = server.health.Check(health_pb2.HealthCheckRequest(), None)  # type: ignore[arg-type]
    return int(response.status)


def test_plaintext_development_mode_refuses_non_loopback(sqlite_url: str, keys_dir: Path) -> None:
    from vimark.client.errors import VimarkError

    with pytest.raises(VimarkError, match="loopback only"):
        VimarkServer(ServerConfig(db_url=sqlite_url, keys_dir=keys_dir, listen="0.0.0.0:0"))


def test_migrations_produce_exactly_the_models_schema(db_url: str) -> None:
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        store.migrate()  # idempotent
    finally:
        store.close()


class FlakyVerify(pb_grpc.MarkServiceServicer):
    """Answers UNAVAILABLE twice, then a verdict: the SDK's retries must hide the first two."""

    def __init__(self) -> None:
        self.calls = 0

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        self.calls += 1
        if self.calls <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return pb.VerifyResponse(verdict=pb.VERDICT_MALFORMED)


def test_sdk_retries_unavailable_with_backoff() -> None:
    flaky = FlakyVerify()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_MarkServiceServicer_to_server(flaky, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with VimarkClient(f"127.0.0.1:{port}", timeout=10) as client:
            assert client.verify("x").verdict == pb.VERDICT_MALFORMED
        assert flaky.calls == 3
    finally:
        server.stop(0)


def test_concurrent_retries_of_one_request_make_one_mark(db_url: str, keys_dir: Path, clock: MovableClock) -> None:
    one = start_server(db_url, keys_dir, clock)
    two = start_server(db_url, keys_dir, clock)
    try:
        with VimarkClient(f"127.0.0.1:{one.port}") as c1, VimarkClient(f"127.0.0.1:{two.port}") as c2:
            c1.upsert_vehicles([vehicle(registered_on="2024-12-03", valid_until="2026-12")])

            # An inspection inside the renewal window: judged twice, the second judgement would
            # refuse (TOO_EARLY against the new validity) — a retry must replay, not re-judge.
            def attempt(client: VimarkClient) -> int:
                return client.issue(
                    request_id="once",
                    plate_number="闽C12345",
                    plate_type="02",
                    reason=cpb.ISSUE_REASON_INSPECTION_PASSED,
                    inspected_on="2026-11-24",
                    station_id="FJ-01",
                ).serial

            with futures.ThreadPoolExecutor(8) as pool:
                serials = set(pool.map(attempt, [c1, c2] * 8))
            assert len(serials) == 1
            assert c1.lookup(plate_number="闽C12345", plate_type="02").current_serial == serials.pop()
    finally:
        one.stop(grace=1)
        two.stop(grace=1)


def test_registry_batches_in_opposite_orders_do_not_deadlock(db_url: str) -> None:
    store = Store(db_url)
    try:
        batch = [
            VehicleRecord(
                0,
                "02",
                f"闽C{i:05d}",
                f"LSVAB2BJ5KN{i:06d}",
                VehicleCategory.SMALL_PASSENGER,
                dt.date(2024, 1, 1),
                5,
                False,
                0,
                None,
                0,
            )
            for i in range(40)
        ]
        store.upsert_vehicles(batch[:20])  # half exist, half are new to the racing batches
        errors: list[Exception] = []

        def work(reverse: bool) -> None:
            for _ in range(15):
                try:
                    store.upsert_vehicles(list(reversed(batch)) if reverse else batch)
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=work, args=(k % 2 == 1,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and store.count_vehicles() == 40
    finally:
        store.close()
