"""The gRPC servicers: parse the request, call the component, shape the answer for the caller.

Who may call what, what each role sees and whether it is audited are the policy table's
(policy.py); the call's plumbing (caller, rate, errors on the wire) is rpc.py's.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from vimark.client import certificate as cert
from vimark.client.domain import (
    Clock,
    china_date,
    format_month,
    parse_date,
    parse_plate_number,
    parse_plate_type,
    parse_vin,
    status_letters,
)
from vimark.client.errors import CertificateError, InvalidArgument, NotFound, PermissionDenied
from vimark.client.trust import key_status_value
from vimark.server import rules
from vimark.server.audit import AuditLog
from vimark.server.auth import Authenticator, Caller
from vimark.server.index import ValidityIndex
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.limits import RateLimiter
from vimark.server.metrics import Metrics
from vimark.server.policy import View
from vimark.server.records import AuditEvent, MarkRecord
from vimark.server.registry import check_registry_dates, parse_status_letters, parse_vehicle
from vimark.server.rpc import ChangeFollower, Servicer, policy_of, rpc
from vimark.server.store import Store
from vimark.server.verifier import VehicleStanding, Verification, Verifier
from vimark.server.views import lookup_response, verify_response
from vimark.v1 import audit_service_pb2 as apb
from vimark.v1 import audit_service_pb2_grpc as apb_grpc
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc
from vimark.v1 import registry_service_pb2 as rpb
from vimark.v1 import registry_service_pb2_grpc as rpb_grpc

MAX_BATCH = 1000  # VerifyBatch items and UpsertVehicles vehicles per call
MAX_AUDIT_PAGE = 1000
DEFAULT_AUDIT_PAGE = 100
MAX_REVOCATION_REASON = 200


def _at_date(text: str, caller: Caller) -> dt.date | None:
    if not text:
        return None
    if not (policy_of(caller).judges_other_dates or caller.unrestricted):
        raise PermissionDenied(f"at_date is not for the {caller.role.value} role: it is judged on today's date")
    return parse_date(text, "at_date")


def _check_qr_text(text: str) -> None:
    if not text:
        raise InvalidArgument("qr_text", "required: the text of the scanned QR")
    if len(text) > cert.MAX_QR_TEXT_LENGTH:
        raise InvalidArgument("qr_text", f"{len(text)} characters; at most {cert.MAX_QR_TEXT_LENGTH}")


def _view(caller: Caller) -> View:
    return View.FULL if caller.unrestricted else policy_of(caller).view


class MarkService(Servicer, pb_grpc.MarkServiceServicer):
    def __init__(
        self,
        metrics: Metrics,
        sync: ChangeFollower,
        auth: Authenticator,
        limiter: RateLimiter | None,
        *,
        audit: AuditLog,
        store: Store,
        index: ValidityIndex,
        issuer: Issuer,
        verifier: Verifier,
        trust: Callable[[], Any],
        presentation_lifetime: dt.timedelta,
    ) -> None:
        super().__init__(metrics, sync, auth, limiter)
        self.audit = audit
        self.store = store
        self.index = index
        self.issuer = issuer
        self.verifier = verifier
        self.keyring = trust
        self.presentation_lifetime = presentation_lifetime

    @rpc("Issue")
    def Issue(self, request: pb.IssueRequest, context: grpc.ServicerContext, caller: Caller) -> pb.IssueResponse:
        command = IssueCommand.parse(
            request.request_id,
            request.plate_type,
            request.plate_number,
            request.vin,
            request.reason,
            request.inspected_on,
            request.station_id,
        )
        issued = self.issuer.issue(command)
        # A Verify right after this Issue must see the new mark (None for a replay: catch up fully).
        self.sync.catch_up(at_least=issued.change_id)
        return _issue_response(issued.mark, issued.replayed)

    @rpc("Verify")
    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext, caller: Caller) -> pb.VerifyResponse:
        _check_qr_text(request.qr_text)
        at = _at_date(request.at_date, caller)
        self.require_ready()
        verification = self.verifier.verify(request.qr_text, at)
        self.metrics.verdict_given("Verify", verification.verdict)
        if policy_of(caller).audited:
            self.audit.record(caller, "Verify", *_audited(verification), time.time())
        return verify_response(verification, _view(caller))

    @rpc("VerifyBatch", cost=lambda request: len(request.qr_texts))
    def VerifyBatch(
        self, request: pb.VerifyBatchRequest, context: grpc.ServicerContext, caller: Caller
    ) -> pb.VerifyBatchResponse:
        if not 1 <= len(request.qr_texts) <= MAX_BATCH:
            raise InvalidArgument("qr_texts", f"{len(request.qr_texts)} items; send 1 to {MAX_BATCH}")
        at = _at_date(request.at_date, caller)
        self.require_ready()
        self.metrics.batch_size.observe(len(request.qr_texts))
        results = self.verifier.verify_many(list(request.qr_texts), at)
        for v in results:
            self.metrics.verdict_given("VerifyBatch", v.verdict)
        if policy_of(caller).audited:
            self.audit.record_many(caller, "VerifyBatch", [_audited(v) for v in results], time.time())
        view = _view(caller)
        return pb.VerifyBatchResponse(results=[verify_response(v, view) for v in results])

    @rpc("LookupVehicleStatus")
    def LookupVehicleStatus(
        self, request: pb.LookupVehicleStatusRequest, context: grpc.ServicerContext, caller: Caller
    ) -> pb.LookupVehicleStatusResponse:
        at = _at_date(request.at_date, caller)
        self.require_ready()
        if request.plate_number or request.plate_type:
            plate_type = parse_plate_type(request.plate_type)
            plate_number = parse_plate_number(request.plate_number)
            vehicle = self.index.by_plate(plate_type, plate_number)
            wanted = f"{plate_number} (plate type {plate_type})"
        elif request.vin:
            vehicle = self.index.by_vin(parse_vin(request.vin))
            wanted = f"VIN {request.vin}"
        else:
            raise InvalidArgument("plate_number", "give plate_number and plate_type, or vin")
        audited = policy_of(caller).audited
        if vehicle is None:
            if audited:
                self.audit.record(
                    caller,
                    "LookupVehicleStatus",
                    request.plate_type,
                    request.plate_number or request.vin,
                    "NOT_FOUND",
                    0,
                    time.time(),
                )
            raise NotFound(f"no vehicle {wanted}")
        if audited:
            self.audit.record(
                caller,
                "LookupVehicleStatus",
                vehicle.plate_type,
                vehicle.plate_number,
                "FOUND",
                vehicle.current_serial,
                time.time(),
            )
        standing = VehicleStanding.of(vehicle, at or china_date(self.verifier.clock()), self.verifier.config)
        return lookup_response(standing, _view(caller))

    @rpc("Present")
    def Present(self, request: pb.PresentRequest, context: grpc.ServicerContext, caller: Caller) -> pb.PresentResponse:
        plate_type = parse_plate_type(request.plate_type)
        plate_number = parse_plate_number(request.plate_number)
        self.require_ready()
        shown = self.issuer.present(plate_type, plate_number, self.presentation_lifetime)
        mark = shown.mark
        return pb.PresentResponse(
            live_qr_text=shown.live,
            live_expire_time=Timestamp(seconds=int(shown.live_expires.timestamp())),
            download_qr_text=shown.download,
            print_qr_text=shown.printed,
            serial=mark.serial,
            valid_until=format_month(mark.valid_until),
        )

    @rpc("GetTrustList")
    def GetTrustList(
        self, request: pb.GetTrustListRequest, context: grpc.ServicerContext, caller: Caller
    ) -> pb.GetTrustListResponse:
        ring = self.keyring()
        response = pb.GetTrustListResponse(generate_time=Timestamp(seconds=int(time.time())))
        for key in sorted(ring.trusted.values(), key=lambda k: k.key_id):
            item = pb.TrustedKey(
                key_id=key.key_id,
                algorithm="Ed25519",
                public_key=key.public_key,
                status=key_status_value(key.status),  # type: ignore[arg-type]
            )
            item.start_time.FromDatetime(key.valid_from)
            if key.valid_until:
                item.end_time.FromDatetime(key.valid_until)
            response.keys.append(item)
        if policy_of(caller).gets_seal_keys or caller.unrestricted:
            for seal_id, seal_key in sorted(ring.seal_keys.items()):
                response.seal_keys.append(pb.SealKey(seal_key_id=seal_id, algorithm="ChaCha20-Poly1305", key=seal_key))
        return response

    @rpc("DescribeMark")
    def DescribeMark(
        self, request: pb.DescribeMarkRequest, context: grpc.ServicerContext, caller: Caller
    ) -> pb.DescribeMarkResponse:
        _check_qr_text(request.qr_text)
        try:
            body = self.verifier.authenticate(request.qr_text).body
        except CertificateError as exc:
            raise InvalidArgument("qr_text", f"not an authentic vimark mark ({exc.reason}): {exc.message}") from None
        return pb.DescribeMarkResponse(
            serial=body.serial,
            plate_number=body.plate_number,
            plate_type=body.plate_type,
            valid_until=body.valid_until_text,
        )

    @rpc("RevokeMark")
    def RevokeMark(
        self, request: pb.RevokeMarkRequest, context: grpc.ServicerContext, caller: Caller
    ) -> pb.RevokeMarkResponse:
        if not 0 < request.serial < 2**63:
            raise InvalidArgument("serial", "required: the serial of the mark to revoke (1 to 2^63-1)")
        if len(request.reason) > MAX_REVOCATION_REASON or not request.reason.isprintable():
            raise InvalidArgument("reason", f"at most {MAX_REVOCATION_REASON} printable characters")
        self.store.revoke_mark(request.serial, request.reason)
        self.sync.catch_up()
        return pb.RevokeMarkResponse(serial=request.serial)


def _audited(v: Verification) -> tuple[str, str, str, int]:
    """What the audit log keeps of a verification: plate type and number (authentic marks only), verdict, serial."""
    body = v.body
    verdict = pb.Verdict.Name(v.verdict)
    return (body.plate_type, body.plate_number, verdict, body.serial) if body else ("", "", verdict, 0)


def _issue_response(mark: MarkRecord, replayed: bool) -> pb.IssueResponse:
    return pb.IssueResponse(
        serial=mark.serial,
        qr_text=mark.qr_text,
        plate_number=mark.plate_number,
        plate_type=mark.plate_type,
        vin=mark.vin,
        valid_until=format_month(mark.valid_until),
        issue_time=Timestamp(seconds=int(mark.issued_at.timestamp())),
        reason=mark.reason,  # type: ignore[arg-type]
        key_id=mark.key_id,
        replayed=replayed,
    )


class RegistryService(Servicer, rpb_grpc.RegistryServiceServicer):
    def __init__(
        self,
        metrics: Metrics,
        sync: ChangeFollower,
        auth: Authenticator,
        limiter: RateLimiter | None,
        *,
        store: Store,
        clock: Clock,
        rule_config: rules.RuleConfig,
    ) -> None:
        super().__init__(metrics, sync, auth, limiter)
        self.store = store
        self.clock = clock
        self.rule_config = rule_config

    @rpc("UpsertVehicles")
    def UpsertVehicles(
        self, request: rpb.UpsertVehiclesRequest, context: grpc.ServicerContext, caller: Caller
    ) -> rpb.UpsertVehiclesResponse:
        if not 1 <= len(request.vehicles) <= MAX_BATCH:
            raise InvalidArgument("vehicles", f"{len(request.vehicles)} vehicles; send 1 to {MAX_BATCH}")
        vehicles = [parse_vehicle(v, f"vehicles[{i}]") for i, v in enumerate(request.vehicles)]
        today = china_date(self.clock())
        for i, record in enumerate(vehicles):
            check_registry_dates(record, today, self.rule_config, f"vehicles[{i}]")
        created, updated = self.store.upsert_vehicles(vehicles)
        self.sync.catch_up()
        return rpb.UpsertVehiclesResponse(created_count=created, updated_count=updated)

    @rpc("SetVehicleStatus")
    def SetVehicleStatus(
        self, request: rpb.SetVehicleStatusRequest, context: grpc.ServicerContext, caller: Caller
    ) -> rpb.SetVehicleStatusResponse:
        plate_type = parse_plate_type(request.plate_type)
        plate_number = parse_plate_number(request.plate_number)
        bits = parse_status_letters(request.status_codes)
        vehicle = self.store.set_status(plate_type, plate_number, bits)
        self.sync.catch_up()
        return rpb.SetVehicleStatusResponse(status_codes=status_letters(vehicle.status_bits))


class AuditService(Servicer, apb_grpc.AuditServiceServicer):
    def __init__(
        self,
        metrics: Metrics,
        sync: ChangeFollower,
        auth: Authenticator,
        limiter: RateLimiter | None,
        *,
        store: Store,
    ) -> None:
        super().__init__(metrics, sync, auth, limiter)
        self.store = store

    @rpc("ListAuditEvents")
    def ListAuditEvents(
        self, request: apb.ListAuditEventsRequest, context: grpc.ServicerContext, caller: Caller
    ) -> apb.ListAuditEventsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size", f"{request.page_size} is negative; 0 means {DEFAULT_AUDIT_PAGE}")
        size = min(request.page_size or DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE)
        plate = parse_plate_number(request.plate_number) if request.plate_number else None
        since = request.start_time.ToDatetime(dt.UTC) if request.HasField("start_time") else None
        until = request.end_time.ToDatetime(dt.UTC) if request.HasField("end_time") else None
        filters = _filters_digest(plate, request.caller_id, since, until)
        after = _read_page_token(request.page_token, filters)
        events = self.store.list_audit_events(
            plate_number=plate,
            caller_id=request.caller_id or None,
            since=since,
            until=until,
            after_id=after,
            limit=size + 1,  # one more tells whether another page follows
        )
        response = apb.ListAuditEventsResponse(events=[_audit_message(e) for e in events[:size]])
        if len(events) > size:
            response.next_page_token = _page_token(events[size - 1].event_id, filters)
        return response


def _filters_digest(*filters: object) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def _page_token(after_id: int, filters: str) -> str:
    return base64.urlsafe_b64encode(f"{after_id}.{filters}".encode()).decode()


def _read_page_token(token: str, filters: str) -> int:
    """The event id a page token continues after; the token must come with the filters it was made for."""
    if not token:
        return 0
    try:
        after, _, made_for = base64.urlsafe_b64decode(token.encode()).decode().partition(".")
        after_id = int(after)
    except ValueError:
        raise InvalidArgument("page_token", "not a token this server gave") from None
    if made_for != filters:
        raise InvalidArgument("page_token", "was given for other filters: send the same filters with it")
    return after_id


def _audit_message(e: AuditEvent) -> apb.AuditEvent:
    message = apb.AuditEvent(
        event_id=e.event_id,
        caller_id=e.caller_id,
        role=e.role,
        rpc=e.rpc,
        plate_type=e.plate_type,
        plate_number=e.plate_number,
        verdict=e.verdict,
        serial=e.serial,
    )
    message.event_time.FromDatetime(e.at)
    return message
