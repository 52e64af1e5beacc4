"""The Python SDK: a typed client with deadlines, retries and vimark's own errors.

    with VimarkClient("127.0.0.1:50051") as client:
        result = client.verify(qr_text)
        if result.verdict == pb.VERDICT_VALID: ...

Every call has a deadline (`timeout`). Calls are retried on UNAVAILABLE with exponential
backoff by gRPC's own retry policy: every vimark RPC is safe to repeat (Issue by its
request_id, the registry calls because they set absolute values).
"""

from __future__ import annotations

import datetime as dt
import json
import queue
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vimark.client.errors import (
    REASONS,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RuleViolation,
    TlsFileError,
    Unauthenticated,
    Unavailable,
    VimarkError,
)
from vimark.client.messages import LANGUAGE_METADATA
from vimark.v1 import audit_service_pb2 as apb
from vimark.v1 import audit_service_pb2_grpc as apb_grpc
from vimark.v1 import errors_pb2
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc
from vimark.v1 import registry_service_pb2 as rpb
from vimark.v1 import registry_service_pb2_grpc as rpb_grpc
from vimark.v1 import terminal_service_pb2 as tpb
from vimark.v1 import terminal_service_pb2_grpc as tpb_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
_RETRY_POLICY = {
    "methodConfig": [
        {
            "name": [
                {"service": "vimark.v1.MarkService"},
                {"service": "vimark.v1.RegistryService"},
                {"service": "vimark.v1.AuditService"},
                {"service": "vimark.v1.TerminalService"},
            ],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
R = TypeVar("R", bound=Message)
# FAILED_PRECONDITION reasons that are the inspection rules' (errors.proto lists them together);
# the others are the system's state (e.g. NO_ACTIVE_KEY).
_RULE_REASONS = frozenset(
    name
    for name, number in errors_pb2.ErrorReason.items()
    if 40 <= number < 60  # type: ignore[operator]
)


def error_from_rpc(error: grpc.RpcError) -> VimarkError:
    """Turn a gRPC failure back into the typed error the server raised."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    reason, field, description, retry_after = "", "", "", 1.0
    try:
        status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    except ValueError:  # details that do not match the call's status: keep the code and message
        status = None
    details: list[Any] = list(status.details) if status else []
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason if info.reason in REASONS else ""
        elif detail.Unpack(bad) and bad.field_violations:
            field, description = bad.field_violations[0].field, bad.field_violations[0].description
        elif detail.Unpack(retry) and retry.HasField("retry_delay"):
            retry_after = max(0.0, retry.retry_delay.ToTimedelta().total_seconds())
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(field, description) if field else InvalidArgument("request", message)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if reason in _RULE_REASONS:
            return RuleViolation(message, reason=reason)
        return FailedPrecondition(message, reason=reason or None)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(message)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message, retry_after=retry_after, reason=reason or None)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return Unavailable(f"{code.name.lower()}: {message}")
    return InternalError(f"{code.name}: {message}")


def tls_credentials(ca: Path, cert: Path | None = None, key: Path | None = None) -> grpc.ChannelCredentials:
    """TLS that trusts the server certificates `ca` signed and, given `cert` and `key`, presents
    that client certificate (a vimark server requires one; it names the caller's role)."""
    if (cert is None) != (key is None):
        raise TlsFileError("a client certificate needs both its certificate and its key file")
    root = _read_pem(ca)
    chain = _read_pem(cert) if cert is not None else None
    private = _read_pem(key) if key is not None else None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=private, certificate_chain=chain)


def _read_pem(path: Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsFileError(f"cannot read the TLS file {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TlsFileError(f"the TLS file {path} is not PEM")
    return data


class VimarkClient:
    def __init__(
        self,
        target: str = DEFAULT_SERVER,
        *,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        language: str | None = None,
    ) -> None:
        """`language` (zh or en) asks the server to explain verdicts in it; by default English."""
        options = [
            ("grpc.service_config", json.dumps(_RETRY_POLICY)),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ]
        self.channel = (
            grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
        )
        self.timeout = timeout
        self._metadata = ((LANGUAGE_METADATA, language),) if language else None
        self.target = target
        self.tls = credentials is not None
        self.marks = pb_grpc.MarkServiceStub(self.channel)
        self.registry = rpb_grpc.RegistryServiceStub(self.channel)
        self.audit = apb_grpc.AuditServiceStub(self.channel)
        self.terminal = tpb_grpc.TerminalServiceStub(self.channel)

    def __enter__(self) -> VimarkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Callable[..., R], request: Message) -> R:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
            if isinstance(error, Unavailable):
                error = Unavailable(f"{error.message}{self.connection_hint(error.message)}")
            raise error from None

    def connection_hint(self, message: str) -> str:
        """What a person can do about a connection that failed (one clause, or nothing)."""
        if "Connection refused" in message:
            return f" (is a vimark server running at {self.target}? `vimark health --server {self.target}`)"
        if not self.tls and "Socket closed" in message:
            return " (the server may require TLS: give --ca, --cert and --key)"
        if self.tls and any(s in message for s in ("WRONG_VERSION_NUMBER", "handshake", "Handshake", "SSL")):
            return " (the server may be a development server without TLS: leave out --ca, --cert and --key)"
        return ""

    # -- MarkService ---------------------------------------------------------------------------
    def issue(
        self,
        *,
        request_id: str,
        plate_number: str,
        plate_type: str,
        reason: int,
        vin: str = "",
        inspected_on: str = "",
        station_id: str = "",
    ) -> pb.IssueResponse:
        return self._call(
            self.marks.Issue,
            pb.IssueRequest(
                request_id=request_id,
                plate_number=plate_number,
                plate_type=plate_type,
                vin=vin,
                reason=reason,  # type: ignore[arg-type]
                inspected_on=inspected_on,
                station_id=station_id,
            ),
        )

    def verify(self, qr_text: str, *, at_date: str = "") -> pb.VerifyResponse:
        return self._call(self.marks.Verify, pb.VerifyRequest(qr_text=qr_text, at_date=at_date))

    def verify_batch(self, qr_texts: Sequence[str], *, at_date: str = "") -> pb.VerifyBatchResponse:
        return self._call(self.marks.VerifyBatch, pb.VerifyBatchRequest(qr_texts=qr_texts, at_date=at_date))

    def lookup(
        self, *, plate_number: str = "", plate_type: str = "", vin: str = "", at_date: str = ""
    ) -> pb.LookupVehicleStatusResponse:
        return self._call(
            self.marks.LookupVehicleStatus,
            pb.LookupVehicleStatusRequest(plate_number=plate_number, plate_type=plate_type, vin=vin, at_date=at_date),
        )

    def present(self, *, plate_number: str, plate_type: str) -> pb.PresentResponse:
        return self._call(self.marks.Present, pb.PresentRequest(plate_number=plate_number, plate_type=plate_type))

    def trust_list(self) -> pb.GetTrustListResponse:
        return self._call(self.marks.GetTrustList, pb.GetTrustListRequest())

    # -- TerminalService: a police terminal's offline data (client/offline/) --------------------
    def trust_bundle(self) -> bytes:
        """The signed trust bundle (a SignedEnvelope), as the server sends it."""
        return self._call(self.terminal.GetTrustBundle, tpb.GetTrustBundleRequest()).signed_bundle

    def status_snapshot(self) -> bytes:
        """The signed full status snapshot, its chunks joined."""
        try:
            stream = self.terminal.GetStatusSnapshot(
                tpb.GetStatusSnapshotRequest(), timeout=self.timeout, metadata=self._metadata
            )
            return b"".join(part.chunk for part in stream)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def status_delta(self, since_change_id: int, since_digest: bytes) -> tpb.GetStatusDeltaResponse:
        request = tpb.GetStatusDeltaRequest(since_change_id=since_change_id, since_digest=since_digest)
        return self._call(self.terminal.GetStatusDelta, request)

    def describe_mark(self, qr_text: str) -> pb.DescribeMarkResponse:
        return self._call(self.marks.DescribeMark, pb.DescribeMarkRequest(qr_text=qr_text))

    def revoke_mark(self, serial: int, reason: str = "") -> pb.RevokeMarkResponse:
        return self._call(self.marks.RevokeMark, pb.RevokeMarkRequest(serial=serial, reason=reason))

    def backfill_marks(
        self, plates: Sequence[tuple[str, str]] = (), *, batch_size: int = 0
    ) -> Iterator[pb.BackfillMarksProgress]:
        """BackfillMarks (operators): progress after each durable batch, the last one `done`.
        `plates` are (plate type, plate number) pairs; none: every vehicle. No deadline (a
        province takes minutes); closing the iterator (or Ctrl-C while reading it) cancels the
        call, and the server stops after the batch it is writing: running it again continues."""
        request = pb.BackfillMarksRequest(
            plates=[pb.BackfillPlate(plate_type=t, plate_number=n) for t, n in plates], batch_size=batch_size
        )
        call = self.marks.BackfillMarks(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()  # a no-op once the stream has ended

    # -- RegistryService -----------------------------------------------------------------------
    def upsert_vehicles(self, vehicles: Sequence[rpb.Vehicle]) -> rpb.UpsertVehiclesResponse:
        return self._call(self.registry.UpsertVehicles, rpb.UpsertVehiclesRequest(vehicles=vehicles))

    def import_vehicles(
        self, batches: Iterable[Sequence[rpb.Vehicle]], *, window: int = 4
    ) -> Iterator[rpb.ImportVehiclesResponse]:
        """ImportVehicles (operators): send `batches` (each 1 to 10,000 vehicles, sequence 1, 2...
        in order) on one stream, at most `window` of them not yet acknowledged, and yield each
        batch's acknowledgement (durable, all or nothing) in order. A refused batch raises its
        error (InvalidArgument naming vehicles[i]): it is the oldest one not acknowledged, and no
        later batch was applied. `batches` is read in the caller's thread: an error it raises
        (a bad row found locally) is raised here after the batches already sent are acknowledged.
        No deadline (a province takes minutes); closing the iterator cancels the call."""
        outbox: queue.SimpleQueue[rpb.ImportVehiclesRequest | None] = queue.SimpleQueue()
        call = self.registry.ImportVehicles(iter(outbox.get, None), metadata=self._metadata)
        unacknowledged = 0

        def acknowledgement() -> rpb.ImportVehiclesResponse:
            ack = next(call, None)
            if ack is None:
                raise InternalError("the server ended ImportVehicles before acknowledging every batch")
            return ack

        try:
            try:
                for sequence, vehicles in enumerate(batches, start=1):
                    if unacknowledged >= window:
                        yield acknowledgement()
                        unacknowledged -= 1
                    outbox.put(rpb.ImportVehiclesRequest(sequence=sequence, vehicles=vehicles))
                    unacknowledged += 1
            except Exception:
                outbox.put(None)  # the batches sent so far stand: hear them out, then raise
                for _ in range(unacknowledged):
                    yield acknowledgement()
                raise
            outbox.put(None)
            for _ in range(unacknowledged):
                yield acknowledgement()
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            outbox.put(None)  # frees gRPC's reader of `outbox` however this ends
            call.cancel()  # a no-op once the stream has ended

    def set_status(self, *, plate_number: str, plate_type: str, status_codes: str) -> rpb.SetVehicleStatusResponse:
        return self._call(
            self.registry.SetVehicleStatus,
            rpb.SetVehicleStatusRequest(plate_number=plate_number, plate_type=plate_type, status_codes=status_codes),
        )

    # -- AuditService --------------------------------------------------------------------------
    def list_audit_events(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        plate_number: str = "",
        caller_id: str = "",
        start_time: dt.datetime | None = None,
        end_time: dt.datetime | None = None,
    ) -> apb.ListAuditEventsResponse:
        request = apb.ListAuditEventsRequest(
            page_size=page_size, page_token=page_token, plate_number=plate_number, caller_id=caller_id
        )
        if start_time is not None:
            request.start_time.FromDatetime(start_time)
        if end_time is not None:
            request.end_time.FromDatetime(end_time)
        return self._call(self.audit.ListAuditEvents, request)

    def verify_audit_chain(self) -> apb.VerifyAuditChainResponse:
        return self._call(self.audit.VerifyAuditChain, apb.VerifyAuditChainRequest())

    def prune_audit_events(self, *, before_time: dt.datetime, last_event_id: int) -> apb.PruneAuditEventsResponse:
        request = apb.PruneAuditEventsRequest(last_event_id=last_event_id)
        request.before_time.FromDatetime(before_time)
        return self._call(self.audit.PruneAuditEvents, request)

    def audit_events(self, **filters: Any) -> Iterator[apb.AuditEvent]:
        """Every audit event matching `filters` (as list_audit_events takes them), page after page."""
        token = ""
        while True:
            page = self.list_audit_events(page_token=token, **filters)
            yield from page.events
            token = page.next_page_token
            if not token:
                return


def to_json_dict(message: Message) -> dict[str, Any]:
    """A response as JSON-ready data: field names in snake_case, enums by name, 64-bit
    integers as numbers (proto3's JSON mapping would quote them)."""
    from google.protobuf.json_format import MessageToDict

    data = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _unquote_int64(message, data)
    return data


def _unquote_int64(message: Message, data: dict[str, Any]) -> None:
    from google.protobuf.descriptor import FieldDescriptor as F

    wide = {F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_SINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64}
    for fd in message.DESCRIPTOR.fields:
        value = data.get(fd.name)
        if value is None:
            continue
        if fd.type in wide:
            data[fd.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif fd.type == F.TYPE_MESSAGE and fd.message_type is not None and fd.message_type.name != "Timestamp":
            items = getattr(message, fd.name)
            for sub_message, sub_data in zip(
                items if isinstance(value, list) else [items],
                value if isinstance(value, list) else [value],
                strict=True,
            ):
                _unquote_int64(sub_message, sub_data)
