"""The server over real TLS: callers are named by client certificates from `vimark pki`; each RPC
admits its roles; each role sees only its fields; a revoked terminal is cut off at its next call;
rate limits answer RESOURCE_EXHAUSTED with a retry delay; police and partner queries are audited."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import MovableClock, vehicle
from tls_fixtures import PLATE, Connect
from vimark.client.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VimarkError,
)
from vimark.client.sdk import VimarkClient, tls_credentials
from vimark.server import pki
from vimark.server.app import ServerConfig, TlsConfig, VimarkServer
from vimark.server.policy import POLICY, Role
from vimark.server.rules import IssueReason
from vimark.server.store import Store
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
STREAMS = ServerConfig().max_workers // 4  # health-watch and reflection streams open at once


# Who may call what, as the issue states it (Present: the systems that act for the owner).
EXPECTED = {
    "issue": {Role.STATION, Role.REGISTRATION, Role.OWNER_SERVICE},
    "verify": set(Role),
    "verify_batch": {Role.POLICE, Role.PARTNER},
    "lookup": {Role.POLICE, Role.PARTNER},
    "present": {Role.OWNER_SERVICE, Role.OPERATOR},
    "trust_list": set(Role),
    "upsert_vehicles": {Role.OPERATOR},
    "set_status": {Role.OPERATOR},
    "revoke_mark": {Role.OPERATOR},
    "describe_mark": {Role.STATION, Role.OWNER_SERVICE, Role.OPERATOR},
    "list_audit_events": {Role.OPERATOR},
}


def call(client: VimarkClient, rpc: str, mark: pb.IssueResponse, role: Role) -> object:
    reason = min(POLICY[role].issue_reasons, default=IssueReason.REGISTRATION)  # one the role may use
    calls: dict[str, Callable[[], object]] = {
        "issue": lambda: client.issue(
            request_id="reg-1", reason=reason.value, inspected_on="2026-11-20", **PLATE
        ),
        "verify": lambda: client.verify(mark.qr_text),
        "verify_batch": lambda: client.verify_batch([mark.qr_text]),
        "lookup": lambda: client.lookup(**PLATE),
        "present": lambda: client.present(**PLATE),
        "trust_list": lambda: client.trust_list(),
        "upsert_vehicles": lambda: client.upsert_vehicles([vehicle(registered_on="2026-11-02")]),
        "set_status": lambda: client.set_status(**PLATE, status_codes="A"),
        "revoke_mark": lambda: client.revoke_mark(10**15, "no such mark"),
        "describe_mark": lambda: client.describe_mark(mark.qr_text),
        "list_audit_events": lambda: client.list_audit_events(page_size=1),
    }
    return calls[rpc]()


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_each_rpc_admits_exactly_its_roles(role: Role, connect: Connect, mark: pb.IssueResponse) -> None:
    client = connect(role)
    for rpc, allowed in EXPECTED.items():
        if role in allowed:
            try:
                call(client, rpc, mark, role)
            except PermissionDenied:
                pytest.fail(f"{role.value} was refused {rpc}")
            except Exception as exc:  # allowed through the gate; the call itself may still be refused
                assert not isinstance(exc, (Unauthenticated, ResourceExhausted)), (rpc, exc)
        else:
            with pytest.raises(PermissionDenied, match=role.value):
                call(client, rpc, mark, role)


def test_police_see_full_status(connect: Connect, mark: pb.IssueResponse) -> None:
    seen = connect(Role.POLICE).verify(mark.qr_text)
    assert seen.verdict == pb.VERDICT_VALID and seen.vin and seen.serial == mark.serial
    assert seen.status_codes == "A" and seen.current_serial == mark.serial
    looked = connect(Role.POLICE).lookup(**PLATE)
    assert looked.vin and looked.status_codes == "A"


def test_describing_a_mark_to_print_it_is_not_a_verification(connect: Connect, mark: pb.IssueResponse) -> None:
    """`vimark render x.pdf` asks DescribeMark for the plate and month: nothing is judged, so no
    verdict is counted and nothing is audited; a text that is not an authentic mark is refused."""
    issuer = connect(Role.OWNER_SERVICE)
    described = issuer.describe_mark(mark.qr_text)
    assert (described.plate_number, described.plate_type, described.valid_until, described.serial) == (
        mark.plate_number,
        mark.plate_type,
        mark.valid_until,
        mark.serial,
    )
    forged = mark.qr_text[:-3] + ("AAA" if not mark.qr_text.endswith("AAA") else "BBB")
    with pytest.raises(InvalidArgument) as refused:
        issuer.describe_mark(forged)
    assert refused.value.field == "qr_text" and "not an authentic vimark mark" in refused.value.message


def test_partner_sees_validity_but_no_status_codes(connect: Connect, mark: pb.IssueResponse) -> None:
    partner = connect(Role.PARTNER)
    seen = partner.verify(mark.qr_text)
    assert seen.verdict == pb.VERDICT_VALID and seen.within_validity and seen.valid_until == "2028-11"
    for absent in ("status_codes", "current_serial", "police_alert", "overdue_cycles", "scrapping_due"):
        assert not getattr(seen, absent), absent
    looked = partner.lookup(**PLATE)
    assert looked.within_validity and looked.valid_until == "2028-11"
    for absent in ("vin", "status_codes", "police_alert", "overdue_cycles", "scrapping_due"):
        assert not getattr(looked, absent), absent
    assert not partner.trust_list().seal_keys


def test_public_sees_valid_plate_and_month_only(connect: Connect, mark: pb.IssueResponse) -> None:
    seen = connect(Role.PUBLIC).verify(mark.qr_text)
    assert (seen.verdict, seen.plate_number, seen.valid_until) == (pb.VERDICT_VALID, "闽C12345", "2028-11")
    assert not seen.HasField("issue_time")
    for absent in ("serial", "vin", "status_codes", "current_serial", "key_id", "within_validity", "presentation"):
        assert not getattr(seen, absent), absent


def test_a_revoked_terminal_is_refused_at_its_next_call(
    connect: Connect, mark: pb.IssueResponse, pki_dir: Path
) -> None:
    lost, other = connect(Role.POLICE), connect(Role.POLICE, "TX-0002")
    assert lost.verify(mark.qr_text).verdict == pb.VERDICT_VALID
    pki.revoke(pki_dir, Role.POLICE, "TX-0001")
    with pytest.raises(Unauthenticated, match="revoked"):
        lost.verify(mark.qr_text)  # the same open channel: no new handshake is needed to cut it off
    assert other.verify(mark.qr_text).verdict == pb.VERDICT_VALID


def test_a_caller_without_a_certificate_never_reaches_an_rpc(tls_server: VimarkServer, pki_dir: Path) -> None:
    # gRPC Python can only require a client certificate at the handshake, so the refusal comes
    # before any RPC (UNAVAILABLE: the connection is closed), never an answer.
    credentials = tls_credentials(pki_dir / "ca.pem")
    with VimarkClient(f"127.0.0.1:{tls_server.port}", timeout=3, credentials=credentials) as anonymous:
        with pytest.raises(Unavailable):
            anonymous.trust_list()


def test_public_rate_limit_answers_resource_exhausted_with_a_retry_delay(
    connect: Connect, mark: pb.IssueResponse, tls_server: VimarkServer
) -> None:
    app = connect(Role.PUBLIC)
    verdicts = [app.verify(mark.qr_text).verdict for _ in range(10)]  # the burst
    assert set(verdicts) == {pb.VERDICT_VALID}
    with pytest.raises(ResourceExhausted) as refused:
        app.verify(mark.qr_text)
    assert 0 < refused.value.retry_after <= 2.0  # one token at 0.5/s
    assert connect(Role.POLICE).verify(mark.qr_text).verdict == pb.VERDICT_VALID  # buckets are per caller
    assert 'vimark_rate_limited_total{role="public"} 1.0' in scrape(tls_server)


def scrape(server: VimarkServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_police_and_partner_queries_are_audited_and_the_public_is_not(
    connect: Connect, mark: pb.IssueResponse, tls_server: VimarkServer, sqlite_url: str
) -> None:
    connect(Role.POLICE).verify(mark.qr_text)
    connect(Role.PARTNER).verify_batch([mark.qr_text, "VM1:garbage"])
    connect(Role.PARTNER).lookup(**PLATE)
    connect(Role.PUBLIC).verify(mark.qr_text)
    text = scrape(tls_server)
    assert re.search(r"^vimark_audit_backlog \S+$", text, re.MULTILINE)
    tls_server.stop(grace=1)  # flushes the audit buffer; the fixture's second stop is harmless
    store = Store(sqlite_url)
    try:
        events = [(e.caller_id, e.role, e.rpc, e.plate_number, e.verdict) for e in store.audit_events()]
    finally:
        store.close()
    assert events == [
        ("vao-1", "registration", "Issue", "闽C12345", "ISSUED"),  # the fixture's mark: issuers are audited too
        ("TX-0001", "police", "Verify", "闽C12345", "VERDICT_VALID"),
        ("insurer-3", "partner", "VerifyBatch", "闽C12345", "VERDICT_VALID"),
        ("insurer-3", "partner", "VerifyBatch", "", "VERDICT_MALFORMED"),
        ("insurer-3", "partner", "LookupVehicleStatus", "闽C12345", "FOUND"),
    ]


def test_tls_server_listens_beyond_loopback_but_development_mode_does_not(
    sqlite_url: str, keys_dir: Path, clock: MovableClock, pki_dir: Path
) -> None:
    from vimark.client.errors import VimarkError
    from vimark.server.app import ServerConfig

    with pytest.raises(VimarkError, match="loopback"):
        VimarkServer(ServerConfig(db_url=sqlite_url, keys_dir=keys_dir, listen="0.0.0.0:0"))
    tls = TlsConfig(pki_dir / "server.pem", pki_dir / "server.key", pki_dir / "ca.pem")
    server = VimarkServer(ServerConfig(db_url=sqlite_url, keys_dir=keys_dir, listen="0.0.0.0:0", tls=tls))
    assert server.port > 0
    server.stop(grace=0)


def test_public_cannot_judge_another_date_and_partners_can(connect: Connect, mark: pb.IssueResponse) -> None:
    # Answers on chosen dates would tell the public why a mark is not valid, and when it began.
    with pytest.raises(PermissionDenied, match="at_date"):
        connect(Role.PUBLIC).verify(mark.qr_text, at_date="2026-11-24")
    assert connect(Role.PARTNER).verify(mark.qr_text, at_date="2026-11-24").verdict == pb.VERDICT_NOT_YET_VALID


def test_a_superseded_mark_names_no_newer_serial_to_a_partner(connect: Connect, mark: pb.IssueResponse) -> None:
    newer = connect(Role.REGISTRATION).issue(request_id="tr-1", reason=cpb.ISSUE_REASON_TRANSFER, **PLATE)
    seen = connect(Role.PARTNER).verify(mark.qr_text)
    assert seen.verdict == pb.VERDICT_SUPERSEDED and str(newer.serial) not in seen.explanation
    assert connect(Role.POLICE).verify(mark.qr_text).current_serial == newer.serial


def test_health_and_reflection_refuse_a_revoked_certificate(connect: Connect, pki_dir: Path) -> None:
    lost = connect(Role.POLICE)
    health = health_pb2_grpc.HealthStub(lost.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
    pki.revoke(pki_dir, Role.POLICE, "TX-0001")
    with pytest.raises(grpc.RpcError) as refused:
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reflection = reflection_pb2_grpc.ServerReflectionStub(lost.channel)
    with pytest.raises(grpc.RpcError) as refused:
        list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), 5))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    other = health_pb2_grpc.HealthStub(connect(Role.POLICE, "TX-0002").channel)
    assert other.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING


def test_idle_streams_cannot_take_the_handler_threads(connect: Connect, mark: pb.IssueResponse) -> None:
    # A sync server lends each call a handler thread for as long as it lasts: idle health watches
    # must not add up to all of them, or Verify would wait behind them.
    health = health_pb2_grpc.HealthStub(connect(Role.PUBLIC).channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(STREAMS)]
    try:
        assert all(next(w).status == SERVING for w in watches)
        with pytest.raises(grpc.RpcError) as refused:
            next(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert connect(Role.POLICE).verify(mark.qr_text).verdict == pb.VERDICT_VALID
    finally:
        for w in watches:
            w.cancel()
    deadline = time.monotonic() + 10  # the slots come back as the cancelled streams end
    while True:
        again = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        try:
            assert next(again).status == SERVING
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            again.cancel()


def test_a_tls_server_will_not_start_without_its_crl(sqlite_url: str, keys_dir: Path, pki_dir: Path) -> None:
    # Without its CRL a server would take every revoked (stolen) terminal's certificate.
    (pki_dir / "crl.pem").unlink()
    tls = TlsConfig(pki_dir / "server.pem", pki_dir / "server.key", pki_dir / "ca.pem")
    with pytest.raises(VimarkError, match="no CRL at"):
        VimarkServer(ServerConfig(db_url=sqlite_url, keys_dir=keys_dir, listen="127.0.0.1:0", tls=tls))
