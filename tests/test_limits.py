"""Limits: oversize messages are refused by gRPC before they are read; calls beyond the concurrency
limit are refused at once; the per-caller token bucket refills at its rate. And observability:
every promised metric is scraped from a live server, and health goes NOT_SERVING before draining."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from test_server_lifecycle import health

from conftest import MovableClock, start_server, vehicle
from ports import free_port
from vimark.client.errors import ResourceExhausted
from vimark.client.sdk import VimarkClient
from vimark.server.app import MAX_MESSAGE_BYTES
from vimark.server.auth import Caller
from vimark.server.limits import RateLimiter
from vimark.server.policy import Rate, Role
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc

PLATE = {"plate_number": "闽C12345", "plate_type": "02"}


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_spends_its_burst_then_refills_at_its_rate_per_caller() -> None:
    clock = FakeTime()
    limiter = RateLimiter({Role.PUBLIC: Rate(0.5, 10)}, clock)
    app, other = Caller(Role.PUBLIC, "app-1"), Caller(Role.PUBLIC, "app-2")
    for _ in range(10):
        limiter.take(app)
    with pytest.raises(ResourceExhausted) as refused:
        limiter.take(app)
    assert refused.value.retry_after == pytest.approx(2.0)
    limiter.take(other)  # another caller has its own bucket
    police = RateLimiter({Role.PUBLIC: Rate(0.5, 10), Role.POLICE: Rate(20, 1000)}, clock)
    for _ in range(10):
        police.take(Caller(Role.PUBLIC, "TX-0571"))
    police.take(Caller(Role.POLICE, "TX-0571"), cost=1000)  # the same id in another role: another bucket
    clock.now += 1.9
    with pytest.raises(ResourceExhausted):
        limiter.take(app)
    clock.now += 0.2
    limiter.take(app)  # 2.1 s refilled one token
    # Enumeration at this rate: a day of continuous calls gives at most 10 + 86,400 * 0.5 answers.
    clock.now += 86_400
    spent = 0
    while True:
        try:
            limiter.take(app)
            spent += 1
        except ResourceExhausted:
            break
    assert spent == 10  # the bucket holds its burst, however long the caller waited


def test_a_call_costlier_than_the_burst_is_refused_outright() -> None:
    limiter = RateLimiter({Role.POLICE: Rate(20, 1000)})
    with pytest.raises(ResourceExhausted, match="smaller batches"):
        limiter.take(Caller(Role.POLICE, "TX-1"), cost=1001)
    limiter.take(Caller(Role.POLICE, "TX-1"), cost=1000)


def test_an_oversize_message_is_refused_before_it_is_read(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> None:
    server = start_server(sqlite_url, keys_dir, clock)
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES)]
        ) as channel:
            stub = pb_grpc.MarkServiceStub(channel)
            huge = pb.VerifyBatchRequest(qr_texts=["VM1:" + "0" * 1020] * 2100)  # about 2.2 MB
            assert huge.ByteSize() > MAX_MESSAGE_BYTES
            with pytest.raises(grpc.RpcError) as refused:
                stub.VerifyBatch(huge, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            # The server is unharmed and answers the next call.
            assert stub.Verify(pb.VerifyRequest(qr_text="VM1:00"), timeout=10).verdict == pb.VERDICT_MALFORMED
    finally:
        server.stop(grace=1)


def test_calls_beyond_the_concurrency_limit_are_refused_at_once(
    sqlite_url: str, keys_dir: Path, clock: MovableClock
) -> None:
    server = start_server(sqlite_url, keys_dir, clock, max_concurrent_rpcs=2)
    gate = threading.Event()
    check = server.verifier.check
    server.verifier.check = lambda *a: (gate.wait(10), check(*a))[1]  # type: ignore[method-assign]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.MarkServiceStub(channel)
            held = [stub.Verify.future(pb.VerifyRequest(qr_text="VM1:00"), timeout=10) for _ in range(2)]
            time.sleep(0.3)  # both are inside the server, waiting at the gate
            with pytest.raises(grpc.RpcError) as refused:
                stub.Verify(pb.VerifyRequest(qr_text="VM1:00"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            gate.set()
            assert [f.result().verdict for f in held] == [pb.VERDICT_MALFORMED] * 2
    finally:
        gate.set()
        server.stop(grace=1)


def test_every_promised_metric_is_scraped(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> None:
    server = start_server(sqlite_url, keys_dir, clock, metrics_port=free_port())
    try:
        with VimarkClient(f"127.0.0.1:{server.port}") as client:
            client.upsert_vehicles([vehicle(registered_on="2026-11-02")])
            mark = client.issue(request_id="m-1", reason=cpb.ISSUE_REASON_REGISTRATION, **PLATE)
            client.verify(mark.qr_text)
            client.verify_batch([mark.qr_text, "VM1:00"])
            client.lookup(**PLATE)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop(grace=1)
    for pattern in (
        r'vimark_rpc_seconds_count\{code="OK",rpc="Verify"\} 1\.0',  # requests by RPC and code
        r'vimark_rpc_seconds_bucket\{code="OK",le="0\.005",rpc="Issue"\}',  # latency histograms
        r'vimark_verdicts_total\{rpc="VerifyBatch",verdict="VERDICT_MALFORMED"\} 1\.0',  # by verdict
        r"vimark_verify_batch_size_count 1\.0",  # batch sizes
        r"vimark_signature_batch_size_count \d",
        r'vimark_gc_pause_seconds_count\{generation="2"\} \d',  # garbage-collection pauses
        r"vimark_index_vehicles 1\.0",  # index size
        r"vimark_index_bytes [1-9]",
        r"vimark_index_change_id [1-9]",  # change-log position and lag
        r"vimark_index_sync_age_seconds \d",
        r"vimark_index_checksum [1-9]",
        r"vimark_audit_backlog \d",  # audit backlog
        r"vimark_audit_written_total \d",
        # Rate-limit refusals: declared here (development mode has no limit to refuse with); the
        # counted value is asserted over TLS in test_tls_roles.py.
        r"# TYPE vimark_rate_limited_total counter",
    ):
        assert re.search(pattern, text), pattern


def test_health_goes_not_serving_before_draining(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> None:
    server = start_server(sqlite_url, keys_dir, clock, shutdown_delay=1.0)
    assert health(server.port) == health_pb2.HealthCheckResponse.SERVING
    stopping = threading.Thread(target=server.stop, kwargs={"grace": 5})
    stopping.start()
    try:
        time.sleep(0.3)
        # Balancers see NOT_SERVING while the server still answers (the shutdown delay) ...
        assert health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        with VimarkClient(f"127.0.0.1:{server.port}") as client:
            assert client.verify("VM1:00").verdict == pb.VERDICT_MALFORMED
    finally:
        stopping.join(timeout=10)
    assert not stopping.is_alive()
