"""The security review's findings, each held by a test: issuance belongs to its caller, copies void
nothing, every issuer call is audited, no lookup is a VIN -> plate oracle, VerifyBatch is held to
Verify's limits and charged by size, and the audit log is chained and kept (docs/security.md)."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import vehicle
from tls_fixtures import PLATE, Connect
from vimark.client.errors import InvalidArgument, PermissionDenied, ResourceExhausted, RuleViolation
from vimark.server.app import VimarkServer
from vimark.server.audit_service import retention_start
from vimark.server.policy import Role
from vimark.server.service import _batch_cost
from vimark.server.store import Store
from vimark.v1 import audit_service_pb2 as apb
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

OVERDUE = {"registered_on": "2022-06-15", "valid_until": "2026-06"}  # due for inspection on 2026-11-25


def fingerprint(pki_dir: Path, name: str) -> str:
    certificate = x509.load_pem_x509_certificate((pki_dir / f"{name}.pem").read_bytes())
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def audit_events(connect: Connect, count: int) -> list[apb.AuditEvent]:
    """The operator's view of the audit log, once `count` events are written (batches every 0.2 s)."""
    deadline = time.monotonic() + 10
    while True:
        events = list(connect(Role.OPERATOR).audit_events())
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_each_kind_of_issuer_issues_for_its_own_reasons(connect: Connect, mark: pb.IssueResponse) -> None:
    refusals = [
        (Role.STATION, cpb.ISSUE_REASON_REGISTRATION),
        (Role.REGISTRATION, cpb.ISSUE_REASON_REDOWNLOAD),
        (Role.OWNER_SERVICE, cpb.ISSUE_REASON_TRANSFER),
    ]
    for role, reason in refusals:
        with pytest.raises(PermissionDenied, match=f"a {role.value} issues for"):
            connect(role).issue(request_id=f"x-{role.value}", reason=reason, **PLATE)


def test_a_station_issues_only_in_its_own_name(
    connect: Connect, tls_server: VimarkServer, pki_dir: Path, sqlite_url: str
) -> None:
    connect(Role.OPERATOR).upsert_vehicles([vehicle(**OVERDUE)])
    station = connect(Role.STATION)
    inspected = {"reason": cpb.ISSUE_REASON_INSPECTION_PASSED, "inspected_on": "2026-11-20", **PLATE}
    with pytest.raises(PermissionDenied, match="not this station's"):
        station.issue(request_id="insp-1", station_id="STATION-99-NOT-ME", **inspected)  # type: ignore[arg-type]
    assert connect(Role.POLICE).lookup(**PLATE).within_validity is False
    issued = station.issue(request_id="insp-2", **inspected)  # type: ignore[arg-type]
    store = Store(sqlite_url, migrate=False)
    try:
        stored = store.mark_by_serial(issued.serial)
    finally:
        store.close()
    assert stored is not None
    assert (stored.station_id, stored.issued_by) == ("station-12", "station/station-12")
    assert stored.issuer_fingerprint == fingerprint(pki_dir, "station-station-12")


def test_a_copy_never_voids_the_owners_other_copies(connect: Connect, mark: pb.IssueResponse) -> None:
    owner = connect(Role.OWNER_SERVICE)
    copies = [
        owner.issue(request_id=f"copy-{i}", reason=reason, **PLATE)
        for i, reason in enumerate([cpb.ISSUE_REASON_REDOWNLOAD, cpb.ISSUE_REASON_PAPER_LOST] * 3)
    ]
    assert {c.serial for c in copies} == {mark.serial} and {c.valid_until for c in copies} == {mark.valid_until}
    police = connect(Role.POLICE)
    for text in [mark.qr_text, *(c.qr_text for c in copies)]:
        assert police.verify(text).verdict == pb.VERDICT_VALID
    # Only a grant supersedes: a transfer makes a new current mark.
    transferred = connect(Role.REGISTRATION).issue(request_id="tr-1", reason=cpb.ISSUE_REASON_TRANSFER, **PLATE)
    assert transferred.serial != mark.serial
    assert police.verify(mark.qr_text).verdict == pb.VERDICT_SUPERSEDED


def test_a_request_id_names_one_request(connect: Connect, mark: pb.IssueResponse) -> None:
    owner = connect(Role.OWNER_SERVICE)
    first = owner.issue(request_id="dl-7", reason=cpb.ISSUE_REASON_REDOWNLOAD, **PLATE)
    again = owner.issue(request_id="dl-7", reason=cpb.ISSUE_REASON_REDOWNLOAD, **PLATE)
    assert again.replayed and again.serial == first.serial
    with pytest.raises(InvalidArgument) as refused:
        owner.issue(request_id="dl-7", reason=cpb.ISSUE_REASON_PAPER_LOST, **PLATE)
    assert refused.value.field == "request_id" and "'dl-7'" in refused.value.message


def test_every_issuer_call_is_audited_refusals_included(
    connect: Connect, mark: pb.IssueResponse, pki_dir: Path
) -> None:
    connect(Role.OPERATOR).set_status(**PLATE, status_codes="C")  # stolen
    with pytest.raises(RuleViolation) as refused:
        connect(Role.REGISTRATION).issue(request_id="tr-9", reason=cpb.ISSUE_REASON_TRANSFER, **PLATE)
    # The station or office learns what to tell the owner, not the police's status letter.
    assert refused.value.reason == "VEHICLE_STATUS_FORBIDS_ISSUE"
    assert "C" not in refused.value.message.replace("vehicle administration office", "")
    assert "被盗抢" not in refused.value.message
    with pytest.raises(RuleViolation):
        connect(Role.OWNER_SERVICE).present(**PLATE)
    with pytest.raises(PermissionDenied):
        connect(Role.STATION).issue(request_id="st-1", reason=cpb.ISSUE_REASON_REGISTRATION, **PLATE)
    events = audit_events(connect, 4)
    seen = [(e.role, e.rpc, e.plate_number, e.verdict) for e in events]
    assert seen == [
        ("registration", "Issue", "闽C12345", "ISSUED"),  # the fixture's registration
        ("registration", "Issue", "闽C12345", "REFUSED_VEHICLE_STATUS_FORBIDS_ISSUE"),
        ("owner_service", "Present", "闽C12345", "REFUSED_VEHICLE_BLOCKED"),
        ("station", "Issue", "闽C12345", "REFUSED_PERMISSION_DENIED"),
    ]
    assert events[0].certificate_fingerprint == fingerprint(pki_dir, "registration-vao-1")


def test_no_role_turns_a_vin_lookup_into_a_plate(connect: Connect, mark: pb.IssueResponse) -> None:
    vin = connect(Role.POLICE).lookup(**PLATE).vin
    assert vin
    partner = connect(Role.PARTNER).lookup(vin=vin)
    assert partner.within_validity and partner.valid_until == mark.valid_until
    assert (partner.plate_number, partner.plate_type, partner.current_serial, partner.vin) == ("", "", 0, "")
    assert connect(Role.POLICE).lookup(vin=vin).plate_number == PLATE["plate_number"]
    for role in (Role.PUBLIC, Role.STATION, Role.REGISTRATION, Role.OWNER_SERVICE):
        with pytest.raises(PermissionDenied):
            connect(role).lookup(vin=vin)


def test_verify_batch_items_are_held_to_verify_limits_and_charged_by_size(
    connect: Connect, mark: pb.IssueResponse
) -> None:
    partner = connect(Role.PARTNER)
    # One 2,000,000-character item used to cost one token: now its size is over a partner's burst.
    with pytest.raises(ResourceExhausted, match="exceeds the partner burst"):
        partner.verify_batch([mark.qr_text, "VM1:" + "A" * 2_000_000])
    judged = partner.verify_batch([mark.qr_text, "VM1:" + "A" * 1100]).results
    assert [r.verdict for r in judged] == [pb.VERDICT_VALID, pb.VERDICT_MALFORMED]  # over 1,024: not read
    assert _batch_cost([mark.qr_text]) == 1
    assert _batch_cost(["A" * 1024] * 10) == 40
    assert _batch_cost(["A" * 2_000_000]) == 7813


def test_the_audit_chain_is_checked_and_only_old_events_are_pruned(
    connect: Connect, mark: pb.IssueResponse, tls_server: VimarkServer
) -> None:
    connect(Role.POLICE).verify(mark.qr_text)
    events = audit_events(connect, 2)
    operator = connect(Role.OPERATOR)
    check = operator.verify_audit_chain()
    assert check.intact and check.checked_count == len(events) and check.head_hash == events[-1].chain_hash
    now = tls_server.config.clock()
    with pytest.raises(PermissionDenied, match="kept 6 months"):
        operator.prune_audit_events(before_time=now - dt.timedelta(days=30), last_event_id=events[-1].event_id)
    old_enough = retention_start(now)
    assert old_enough <= now - dt.timedelta(days=181)
    pruned = operator.prune_audit_events(before_time=old_enough, last_event_id=events[-1].event_id)
    assert pruned.deleted_count == 0  # every event is younger
    for role in (Role.POLICE, Role.PARTNER, Role.STATION):
        with pytest.raises(PermissionDenied):
            connect(role).verify_audit_chain()
