"""No certificate can stall the server: calls that never send their request are identified and
bounded before they may hold a handler thread (server/guard.py)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from tls_fixtures import CALLERS, Connect
from vimark.client.sdk import tls_credentials
from vimark.server import pki
from vimark.server.app import ServerConfig, VimarkServer
from vimark.server.policy import Role
from vimark.v1 import mark_service_pb2 as pb

STALLED_PER_CERTIFICATE = 64
CONFIG = ServerConfig()
PER_CALLER, RECEIVE_TIMEOUT = CONFIG.max_waiting_per_caller, CONFIG.receive_timeout
SERVER_STALLED = CONFIG.max_workers // 2  # stalled calls the server lets stay, all callers together
STALL_GRACE = 1.0
CALLS = 450  # twice, plus a warm-up, within the police burst of 1,000


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def police_run(connect: Connect, qr_text: str, calls: int = CALLS) -> tuple[list[float], int]:
    """Sequential police Verifys: their latencies and how many failed."""
    police = connect(Role.POLICE)
    latencies: list[float] = []
    failed = 0
    for _ in range(calls):
        started = time.perf_counter()
        try:
            assert police.verify(qr_text).verdict == pb.VERDICT_VALID
        except Exception:
            failed += 1
        latencies.append(time.perf_counter() - started)
    return latencies, failed


def stall(server: VimarkServer, pki_dir: Path, name: str, opened: list[grpc.Future], release: threading.Event) -> None:
    """Open STALLED_PER_CERTIFICATE Verify calls as client streams that never send a message."""
    credentials = tls_credentials(pki_dir / "ca.pem", pki_dir / f"{name}.pem", pki_dir / f"{name}.key")
    channel = grpc.secure_channel(f"127.0.0.1:{server.port}", credentials)
    verify = channel.stream_unary(
        "/vimark.v1.MarkService/Verify",
        request_serializer=pb.VerifyRequest.SerializeToString,
        response_deserializer=pb.VerifyResponse.FromString,
    )

    def nothing() -> Iterator[pb.VerifyRequest]:
        release.wait(60)
        return
        yield  # a generator that ends without a message once released

    for _ in range(STALLED_PER_CERTIFICATE):
        opened.append(verify.future(nothing(), timeout=60))


def test_calls_that_send_nothing_cannot_stall_police(
    tls_server: VimarkServer,
    pki_dir: Path,
    connect: Connect,
    mark: pb.IssueResponse,
) -> None:
    pki.issue(pki_dir, Role.PUBLIC, "stolen-phone")
    pki.revoke(pki_dir, Role.PUBLIC, "stolen-phone")
    pki.issue(pki_dir, Role.PUBLIC, "second-phone")  # a second valid certificate attacking too
    police_run(connect, mark.qr_text, 50)  # warm up
    baseline, failed = police_run(connect, mark.qr_text)
    assert failed == 0

    opened: list[grpc.Future] = []
    release = threading.Event()
    try:
        stall(tls_server, pki_dir, "public-stolen-phone", opened, release)  # revoked
        stall(tls_server, pki_dir, f"public-{CALLERS[Role.PUBLIC]}", opened, release)  # valid, naming a role
        stall(tls_server, pki_dir, "public-second-phone", opened, release)
        time.sleep(STALL_GRACE + 0.5)  # past the grace: the stalled calls beyond the server's bound are dropped
        attacked, failed = police_run(connect, mark.qr_text)
    finally:
        release.set()
    codes = [f.exception().code() for f in opened if f.exception() is not None]  # type: ignore[union-attr]
    print(
        f"police Verify p99 {p99(baseline) * 1000:.2f} ms alone, {p99(attacked) * 1000:.2f} ms beside "
        f"{len(opened)} stalled calls (median {statistics.median(baseline) * 1000:.2f} and "
        f"{statistics.median(attacked) * 1000:.2f} ms); stalled calls ended "
        + ", ".join(f"{c.name} {codes.count(c)}" for c in sorted(set(codes), key=lambda c: c.name))
    )
    assert failed == 0
    # Stalled calls holding the threads would cost police seconds (STALL_GRACE and more); the 10 ms
    # allow for a scheduling hiccup on a shared 2-core machine (a p99 of 2.8 ms alone against 8.3 ms
    # beside failed a CI run with no stall at all).
    assert p99(attacked) <= 2 * p99(baseline) + 0.010, (p99(baseline), p99(attacked))
    assert codes[:STALLED_PER_CERTIFICATE] == [grpc.StatusCode.UNAUTHENTICATED] * STALLED_PER_CERTIFICATE  # revoked
    # The valid ones': refused at once beyond each caller's allowance, or dropped once stalled past
    # the server's bound; what was still open ended at the test's release (INVALID_ARGUMENT: no message).
    valid = codes[STALLED_PER_CERTIFICATE:]
    assert len(valid) == 2 * STALLED_PER_CERTIFICATE and not any(f.exception() is None for f in opened)
    still_open = valid.count(grpc.StatusCode.INVALID_ARGUMENT)
    assert still_open <= SERVER_STALLED, valid
    ended = still_open + valid.count(grpc.StatusCode.CANCELLED) + valid.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert ended == len(valid), valid


def test_a_call_whose_message_never_comes_is_dropped(
    tls_server: VimarkServer,
    pki_dir: Path,
    mark: pb.IssueResponse,
) -> None:
    opened: list[grpc.Future] = []
    release = threading.Event()
    started = time.monotonic()
    try:
        stall(tls_server, pki_dir, f"police-{CALLERS[Role.POLICE]}", opened, release)
        time.sleep(0.5)
        open_after_grace = sum(not f.done() for f in opened)
        waited = [f for f in opened if f.exception(timeout=30) is not None]
    finally:
        release.set()
    elapsed = time.monotonic() - started
    codes = [f.exception().code() for f in waited]  # type: ignore[union-attr]
    assert open_after_grace <= PER_CALLER, open_after_grace  # the rest were refused at once
    assert len(codes) == STALLED_PER_CERTIFICATE
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == STALLED_PER_CERTIFICATE - PER_CALLER
    assert codes.count(grpc.StatusCode.CANCELLED) == PER_CALLER, codes  # dropped at the receive timeout
    assert RECEIVE_TIMEOUT <= elapsed < RECEIVE_TIMEOUT + 5, elapsed


def test_the_guard_checks_the_role_before_waiting_for_the_request(
    tls_server: VimarkServer, pki_dir: Path
) -> None:
    """A role the RPC is not for is refused before its request is read: a public caller that opens
    LookupVehicleStatus and sends nothing gets PERMISSION_DENIED at once, not after the 5 s
    receive timeout (rpc() would check the role too, but only once a request has arrived)."""
    name = f"public-{CALLERS[Role.PUBLIC]}"
    credentials = tls_credentials(pki_dir / "ca.pem", pki_dir / f"{name}.pem", pki_dir / f"{name}.key")
    release = threading.Event()

    def nothing() -> Iterator[pb.LookupVehicleStatusRequest]:
        release.wait(30)
        return
        yield

    with grpc.secure_channel(f"127.0.0.1:{tls_server.port}", credentials) as channel:
        lookup = channel.stream_unary(
            "/vimark.v1.MarkService/LookupVehicleStatus",
            request_serializer=pb.LookupVehicleStatusRequest.SerializeToString,
            response_deserializer=pb.LookupVehicleStatusResponse.FromString,
        )
        started = time.monotonic()
        call = lookup.future(nothing(), timeout=20)
        try:
            error = call.exception(timeout=10)
        finally:
            release.set()
    assert isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "LookupVehicleStatus is for" in (error.details() or "")
    assert time.monotonic() - started < RECEIVE_TIMEOUT  # not after waiting for a request


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


def test_each_methods_guarded_handler_is_made_once_and_unknown_methods_are_not_kept() -> None:
    """The guard wraps a method's handler on its first call and serves the same one after; a
    method no service has is answered UNIMPLEMENTED by gRPC and leaves nothing behind."""
    from vimark.server.auth import DevAuth
    from vimark.server.guard import CallGuard

    looked_up: list[str] = []

    def continuation(details: _Details) -> grpc.RpcMethodHandler | None:
        looked_up.append(details.method)
        if details.method.endswith("/Verify"):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: request)
        return None

    guard = CallGuard(DevAuth(Role.POLICE), total=4, per_caller=None, max_streams=2)
    first = guard.intercept_service(continuation, _Details("/vimark.v1.MarkService/Verify"))
    second = guard.intercept_service(continuation, _Details("/vimark.v1.MarkService/Verify"))
    assert first is second and first is not None and first.stream_unary is not None  # read by the guard
    for k in range(3):
        assert guard.intercept_service(continuation, _Details(f"/made.up/Method{k}")) is None
    assert looked_up == ["/vimark.v1.MarkService/Verify", "/made.up/Method0", "/made.up/Method1", "/made.up/Method2"]
    assert list(guard._guarded) == ["/vimark.v1.MarkService/Verify"]
