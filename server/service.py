"""The gRPC servicers: check the request, call the component, shape the answer for the role.

Errors cross the wire as a canonical code plus a google.rpc.ErrorInfo whose `reason` is the
VimarkError's, so the SDK raises the same typed exception on the other side.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vimark.client import certificate as cert
from vimark.client.domain import (
    BLOCKS_ROAD_MASK,
    Clock,
    VehicleCategory,
    china_date,
    format_month,
    month_of,
    parse_date,
    parse_month,
    parse_plate_number,
    parse_plate_type,
    parse_vin,
    status_bits,
    status_letters,
)
from vimark.client.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RuleViolation,
    Unauthenticated,
    Unavailable,
    VimarkError,
)
from vimark.server import rules, views
from vimark.server.audit import AUDITED_ROLES, AuditLog
from vimark.server.auth import Authenticator, Caller
from vimark.server.index import ValidityIndex
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.limits import RateLimiter
from vimark.server.metrics import Metrics
from vimark.server.records import MarkRecord, VehicleRecord
from vimark.server.store import Store
from vimark.server.verifier import VehicleStanding, Verification, Verifier
from vimark.server.views import Role
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc
from vimark.v1 import registry_service_pb2 as rpb
from vimark.v1 import registry_service_pb2_grpc as rpb_grpc

log = logging.getLogger("vimark.server")

MAX_BATCH = 1000  # VerifyBatch items and UpsertVehicles vehicles per call
DOMAIN = "vimark.v1"

_CODES: list[tuple[type[VimarkError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (RuleViolation, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
]
EVERYONE = frozenset(Role)
# Who may call what. The registration system and stations issue; operators feed the registry; every
# role verifies a QR it is shown; only police and partners look plates up or verify in bulk; Present
# hands out a vehicle's QR, so only the systems that act for its owner (issuer) and operators get it.
ALLOWED_ROLES: dict[str, frozenset[Role]] = {
    "Issue": frozenset({Role.ISSUER}),
    "Verify": EVERYONE,
    "VerifyBatch": frozenset({Role.POLICE, Role.PARTNER}),
    "LookupVehicleStatus": frozenset({Role.POLICE, Role.PARTNER}),
    "Present": frozenset({Role.ISSUER, Role.OPERATOR}),
    "GetTrustList": EVERYONE,
    "UpsertVehicles": frozenset({Role.OPERATOR}),
    "SetVehicleStatus": frozenset({Role.OPERATOR}),
    "RevokeMark": frozenset({Role.OPERATOR}),
}


class IndexSync(Protocol):
    """Brings the index up to the store's change log (after a local write, and in the background)."""

    ready: bool

    def catch_up(self, at_least: int | None = None) -> None: ...


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, error: VimarkError) -> NoReturn:
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN)
    field = getattr(error, "field", None)
    if field:
        info.metadata["field"] = field
    details = [_packed(info)]
    if isinstance(error, ResourceExhausted):
        delay = Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=details)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returns only by raising")


def _packed(message: Any) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


R = TypeVar("R")


def rpc(name: str, cost: Callable[[Any], int] = lambda request: 1) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Identify the caller, check its role and rate limit, time the call, count it by code, and
    turn VimarkErrors into gRPC statuses. The method receives the Caller after the request."""
    allowed = ALLOWED_ROLES[name]

    def wrap(method: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(method)
        def handler(self: _Base, request: Any, context: grpc.ServicerContext) -> R:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                caller = self.auth.identify(context)
                if caller.role not in allowed and not caller.unrestricted:
                    roles = ", ".join(sorted(r.value for r in allowed))
                    raise PermissionDenied(f"{name} is for {roles}; this caller is {caller.role.value}")
                if self.limiter is not None:
                    try:
                        self.limiter.take(caller, cost(request))
                    except ResourceExhausted:
                        self.metrics.rate_limited.labels(caller.role.value).inc()
                        raise
                return method(self, request, context, caller)
            except VimarkError as exc:
                code = next((c for t, c in _CODES if isinstance(exc, t)), grpc.StatusCode.FAILED_PRECONDITION)
                _abort(context, code, exc)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", name)
                context.abort(code, f"{name} failed inside vimark; the server log has the details")
            finally:
                self.metrics.rpc_finished(name, code.name, time.perf_counter() - start)

        return handler

    return wrap


class _Base:
    def __init__(self, metrics: Metrics, sync: IndexSync, auth: Authenticator, limiter: RateLimiter | None) -> None:
        self.metrics = metrics
        self.sync = sync
        self.auth = auth
        self.limiter = limiter  # None: no per-caller limit (development mode has one shared caller)

    def require_ready(self) -> None:
        if not self.sync.ready:
            raise Unavailable("the validity index is still loading")


def _at_date(text: str, caller: Caller) -> dt.date | None:
    if not text:
        return None
    if not (views.may_judge_another_date(caller.role) or caller.unrestricted):
        raise PermissionDenied(f"at_date is not for the {caller.role.value} role: it is judged on today's date")
    return parse_date(text, "at_date")


def _check_qr_text(text: str) -> None:
    if not text:
        raise InvalidArgument("qr_text", "required: the text of the scanned QR")
    if len(text) > cert.MAX_QR_TEXT_LENGTH:
        raise InvalidArgument("qr_text", f"{len(text)} characters; at most {cert.MAX_QR_TEXT_LENGTH}")


class MarkService(_Base, pb_grpc.MarkServiceServicer):
    def __init__(
        self,
        metrics: Metrics,
        sync: IndexSync,
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
        issued = self.issuer.issue_logged(command)
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
        if caller.role in AUDITED_ROLES:
            self.audit.record(caller, "Verify", *_audited(verification), time.time())
        return views.verify_response(verification, caller.role)

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
        if caller.role in AUDITED_ROLES:
            self.audit.record_many(caller, "VerifyBatch", [_audited(v) for v in results], time.time())
        return pb.VerifyBatchResponse(results=[views.verify_response(v, caller.role) for v in results])

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
        audited = caller.role in AUDITED_ROLES
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
        return views.lookup_response(standing, caller.role)

    @rpc("Present")
    def Present(self, request: pb.PresentRequest, context: grpc.ServicerContext, caller: Caller) -> pb.PresentResponse:
        plate_type = parse_plate_type(request.plate_type)
        plate_number = parse_plate_number(request.plate_number)
        self.require_ready()
        vehicle = self.index.by_plate(plate_type, plate_number)
        if vehicle is None:
            raise NotFound(f"no vehicle {plate_number} (plate type {plate_type})")
        if vehicle.status_bits & BLOCKS_ROAD_MASK:
            raise RuleViolation(f"{plate_number}'s status forbids the road: no mark is shown", reason="VEHICLE_BLOCKED")
        if self.index.is_revoked(vehicle.current_serial):
            raise RuleViolation(f"{plate_number}'s current mark is revoked", reason="MARK_REVOKED")
        mark = self.store.mark_by_serial(vehicle.current_serial) if vehicle.current_serial else None
        if mark is None:
            raise RuleViolation(f"{plate_number} has no mark yet", reason="NO_MARK")
        shown = self.issuer.present(mark, vehicle, self.presentation_lifetime)
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
        response = pb.GetTrustListResponse(generated_time=Timestamp(seconds=int(time.time())))
        statuses = {"active": pb.KEY_STATUS_ACTIVE, "retired": pb.KEY_STATUS_RETIRED, "revoked": pb.KEY_STATUS_REVOKED}
        for key in sorted(ring.trusted.values(), key=lambda k: k.key_id):
            item = pb.TrustedKey(
                key_id=key.key_id, algorithm="Ed25519", public_key=key.public_key, status=statuses[key.status]
            )
            item.valid_from_time.FromDatetime(key.valid_from)
            if key.valid_until:
                item.valid_until_time.FromDatetime(key.valid_until)
            response.keys.append(item)
        if views.may_see_seal_keys(caller.role):
            for seal_id, seal_key in sorted(ring.seal_keys.items()):
                response.seal_keys.append(pb.SealKey(seal_key_id=seal_id, algorithm="ChaCha20-Poly1305", key=seal_key))
        return response


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
        issued_time=Timestamp(seconds=int(mark.issued_at.timestamp())),
        reason=mark.reason,  # type: ignore[arg-type]
        key_id=mark.key_id,
        replayed=replayed,
    )


def parse_vehicle(v: rpb.Vehicle, field: str = "vehicle") -> VehicleRecord:
    """A registry Vehicle message, checked; errors name the field (e.g. vehicles[3].vin)."""
    try:
        return VehicleRecord(
            vehicle_id=0,
            plate_type=parse_plate_type(v.plate_type),
            plate_number=parse_plate_number(v.plate_number),
            vin=parse_vin(v.vin),
            category=VehicleCategory.parse(v.category),
            registered_on=parse_date(v.registered_on, "registered_on"),
            seats=_seats(v.seats),
            exemption_lost=v.exemption_lost,
            status_bits=status_bits(v.status_codes or "A"),
            valid_until=parse_month(v.valid_until) if v.valid_until else None,
            current_serial=0,
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}.{exc.field}", exc.message.split(": ", 1)[-1]) from None


def _seats(seats: int) -> int:
    if seats > 99:
        raise InvalidArgument("seats", f"{seats} seats is not a motor vehicle vimark marks (at most 99)")
    return seats


def check_registry_dates(v: VehicleRecord, today: dt.date, config: rules.RuleConfig, field: str) -> None:
    """A registry row's dates must be possible today: registered by now, valid from its
    registration on and not beyond what any inspection granted today could reach. A wrong row
    would otherwise become a signed mark (a redownload carries the registry's validity)."""
    if v.registered_on > today:
        raise InvalidArgument(f"{field}.registered_on", f"{v.registered_on} is after today ({today})")
    if v.valid_until is None:
        return
    if v.valid_until < month_of(v.registered_on):
        raise InvalidArgument(
            f"{field}.valid_until", f"{format_month(v.valid_until)} is before the registration ({v.registered_on})"
        )
    latest = rules.latest_recordable_validity(today, config)
    if v.valid_until > latest:
        raise InvalidArgument(
            f"{field}.valid_until",
            f"{format_month(v.valid_until)} is beyond any validity granted by today (at most {format_month(latest)})",
        )


class RegistryService(_Base, rpb_grpc.RegistryServiceServicer):
    def __init__(
        self,
        metrics: Metrics,
        sync: IndexSync,
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
        if not request.status_codes:
            raise InvalidArgument("status_codes", "required: the full set of letters, or A to clear")
        if "Q" in request.status_codes:
            raise InvalidArgument("status_codes", "Q (overdue) is derived from the valid-until month, not set")
        vehicle = self.store.set_status(plate_type, plate_number, status_bits(request.status_codes))
        self.sync.catch_up()
        return rpb.SetVehicleStatusResponse(status_codes=status_letters(vehicle.status_bits))

    @rpc("RevokeMark")
    def RevokeMark(
        self, request: rpb.RevokeMarkRequest, context: grpc.ServicerContext, caller: Caller
    ) -> rpb.RevokeMarkResponse:
        if not 0 < request.serial < 2**63:
            raise InvalidArgument("serial", "required: the serial of the mark to revoke (1 to 2^63-1)")
        if len(request.reason) > 200 or not request.reason.isprintable():
            raise InvalidArgument("reason", "at most 200 printable characters")
        self.store.revoke_mark(request.serial, request.reason)
        self.sync.catch_up()
        return rpb.RevokeMarkResponse(serial=request.serial)
