"""AuditService: operators read the audit log page by page, check its hash chain, and prune what
they have archived once it is older than the retention. Never the database: an operator's
certificate is all it takes."""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import hashlib
import logging
from typing import Any, cast

import grpc

from vimark.client.domain import CHINA_TIME, Clock, parse_plate_number
from vimark.client.errors import InvalidArgument, PermissionDenied
from vimark.server.auth import Authenticator, Caller
from vimark.server.limits import RateLimiter
from vimark.server.metrics import Metrics
from vimark.server.records import AuditEvent
from vimark.server.rpc import ChangeFollower, Servicer, rpc
from vimark.server.store import Store
from vimark.v1 import audit_service_pb2 as apb
from vimark.v1 import audit_service_pb2_grpc as apb_grpc

log = logging.getLogger("vimark.server")

MAX_AUDIT_PAGE = 1000
DEFAULT_AUDIT_PAGE = 100
AUDIT_RETENTION_MONTHS = 6  # the least that Chinese law asks network operators to keep their logs


class AuditService(Servicer, apb_grpc.AuditServiceServicer):
    def __init__(
        self,
        metrics: Metrics,
        sync: ChangeFollower,
        auth: Authenticator,
        limiter: RateLimiter | None,
        *,
        store: Store,
        clock: Clock,
    ) -> None:
        super().__init__(metrics, sync, auth, limiter)
        self.store = store
        self.clock = clock

    @rpc("ListAuditEvents")
    def ListAuditEvents(
        self, request: apb.ListAuditEventsRequest, context: grpc.ServicerContext, caller: Caller
    ) -> apb.ListAuditEventsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size", f"{request.page_size} is negative; 0 means {DEFAULT_AUDIT_PAGE}")
        size = min(request.page_size or DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE)
        plate = parse_plate_number(request.plate_number) if request.plate_number else None
        since = _instant(request, "start_time")
        until = _instant(request, "end_time")
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

    @rpc("VerifyAuditChain")
    def VerifyAuditChain(
        self, request: apb.VerifyAuditChainRequest, context: grpc.ServicerContext, caller: Caller
    ) -> apb.VerifyAuditChainResponse:
        checked, head, broken = self.store.verify_audit_chain()
        if broken is not None:
            log.error("audit log hash chain broken at event %d: the log was altered", broken)
        return apb.VerifyAuditChainResponse(
            checked_count=checked, intact=broken is None, first_broken_event_id=broken or 0, head_hash=head
        )

    @rpc("PruneAuditEvents")
    def PruneAuditEvents(
        self, request: apb.PruneAuditEventsRequest, context: grpc.ServicerContext, caller: Caller
    ) -> apb.PruneAuditEventsResponse:
        if not request.HasField("before_time"):
            raise InvalidArgument("before_time", "required: events before this instant are deleted")
        if not 0 < request.last_event_id < 2**63:
            raise InvalidArgument("last_event_id", "required: the last event archived (1 to 2^63-1)")
        before = _instant(request, "before_time")
        assert before is not None
        youngest = retention_start(self.clock())
        if before > youngest:
            raise PermissionDenied(
                f"audit events are kept {AUDIT_RETENTION_MONTHS} months: before_time must be at or before "
                f"{youngest.astimezone(CHINA_TIME).isoformat(timespec='seconds')}"
            )
        deleted = self.store.prune_audit(before, request.last_event_id)
        log.info("audit log: %d events before %s pruned by %s", deleted, before.isoformat(), caller.name)
        return apb.PruneAuditEventsResponse(deleted_count=deleted)


def _instant(request: Any, field: str) -> dt.datetime | None:
    """A Timestamp field as an aware datetime, or None when unset; INVALID_ARGUMENT naming the
    field when it is outside what a datetime holds (year 1 to 9999)."""
    if not request.HasField(field):
        return None
    try:
        return cast("dt.datetime", getattr(request, field).ToDatetime(dt.UTC))
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "outside the years 1 to 9999") from None


def retention_start(now: dt.datetime) -> dt.datetime:
    """The oldest instant the audit log must still hold: AUDIT_RETENTION_MONTHS calendar months ago
    (China time; the day clamped to the month's length)."""
    here = now.astimezone(CHINA_TIME)
    months = here.year * 12 + here.month - 1 - AUDIT_RETENTION_MONTHS
    year, month = divmod(months, 12)
    day = min(here.day, calendar.monthrange(year, month + 1)[1])
    return here.replace(year=year, month=month + 1, day=day)


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
    if not 0 <= after_id < 2**63:
        raise InvalidArgument("page_token", "not a token this server gave")
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
        certificate_fingerprint=e.fingerprint,
        chain_hash=e.chain,
    )
    message.event_time.FromDatetime(e.at)
    return message
