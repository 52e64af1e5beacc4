"""The gRPC servicers: parse the request, call the component, shape the answer for the caller.

Who may call what, what each role sees and whether it is audited are the policy table's
(policy.py); the call's plumbing (caller, rate, errors on the wire) is rpc.py's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
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
from vimark.client.errors import CertificateError, InvalidArgument, NotFound, PermissionDenied, VimarkError
from vimark.client.messages import EN, LANGUAGE_METADATA, language_of
from vimark.client.trust import key_status_value
from vimark.server import backfill, rules
from vimark.server.audit import AuditLog
from vimark.server.auth import Authenticator, Caller
from vimark.server.hotpath import ValidMark
from vimark.server.index import ValidityIndex
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.limits import RateLimiter
from vimark.server.metrics import Metrics
from vimark.server.pipeline import staged
from vimark.server.policy import View
from vimark.server.records import MarkRecord, VehicleRecord
from vimark.server.registry import check_registry_dates, parse_status_letters, parse_vehicle
from vimark.server.rpc import ChangeFollower, Servicer, policy_of, rpc
from vimark.server.store import Store
from vimark.server.verifier import Checked, VehicleStanding, Verifier
from vimark.server.views import checked_response, lookup_response
from vimark.server.wire_errors import abort
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc
from vimark.v1 import registry_service_pb2 as rpb
from vimark.v1 import registry_service_pb2_grpc as rpb_grpc

log = logging.getLogger("vimark.server")

MAX_BATCH = 1000  # VerifyBatch items and UpsertVehicles vehicles per call
MAX_IMPORT_BATCH = 10_000  # ImportVehicles vehicles per batch (about 800 KB: within MAX_MESSAGE_BYTES)
# After each ImportVehicles batch, so Issues waiting for the write lock go first: a waiter blocked in
# flock wakes within microseconds; 10 ms here cost a fifth of the import rate (docs/operations.md).
IMPORT_PAUSE_SECONDS = 0.002
MAX_REVOCATION_REASON = 200
BATCH_TOKEN_CHARACTERS = 256


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


def _batch_cost(qr_texts: Sequence[str]) -> int:
    """Tokens a VerifyBatch costs: one per started BATCH_TOKEN_CHARACTERS of each item, so a batch
    is charged by its size (a mark is about 240 characters: one token; an item over Verify's 1,024
    characters is judged MALFORMED unread, but still pays for its size). The item count is checked
    first, so a batch of the wrong size is refused before it costs anything."""
    if not 1 <= len(qr_texts) <= MAX_BATCH:
        raise InvalidArgument("qr_texts", f"{len(qr_texts)} items; send 1 to {MAX_BATCH}")
    return sum(1 + (len(text) - 1) // BATCH_TOKEN_CHARACTERS for text in qr_texts)


def _in_callers_name(command: IssueCommand, caller: Caller) -> IssueCommand:
    """The policy table's reasons for the caller's kind of issuer; a station issues in its own name
    (its certificate's id); the mark records the certificate."""
    row = policy_of(caller)
    if not caller.unrestricted:
        if rules.IssueReason(command.reason) not in row.issue_reasons:
            allowed = ", ".join(sorted(r.label for r in row.issue_reasons))
            raise PermissionDenied(
                f"a {caller.role.value} issues for {allowed}, not {rules.IssueReason(command.reason).label}"
            )
        if row.issues_in_own_name:
            if command.station_id not in ("", caller.caller_id):
                raise PermissionDenied(
                    f"station_id {command.station_id!r} is not this station's: it issues as {caller.caller_id!r}"
                )
            command = replace(command, station_id=caller.caller_id)
        elif command.station_id:
            raise PermissionDenied(f"station_id is a station's own (its certificate's id), not a {caller.role.value}'s")
    return replace(command, issued_by=caller.name, issuer_fingerprint=caller.fingerprint)


def _as_recorded(plate_type: str, plate_number: str) -> tuple[str, str]:
    """A plate as typed in a request, as the audit log keeps it: canonical where it parses (so a
    search by plate finds it however it was typed), as given otherwise. Plates read from the index
    or a mark are canonical already and are recorded as they are."""
    try:
        return parse_plate_type(plate_type), parse_plate_number(plate_number)
    except InvalidArgument:
        return plate_type, plate_number


def _language(context: grpc.ServicerContext) -> str:
    """The language the call asks explanations in (client/messages.py); English by default."""
    for key, value in context.invocation_metadata() or ():
        if key == LANGUAGE_METADATA:
            return language_of(str(value), environ={})
    return EN


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

    def _audit(self, caller: Caller, rpc: str, plate_type: str, plate_number: str, outcome: str, serial: int) -> None:
        if policy_of(caller).audited:
            self.audit.record(caller, rpc, plate_type, plate_number, outcome, serial, time.time())

    @contextlib.contextmanager
    def _audited_refusals(self, caller: Caller, rpc: str, plate_type: str, plate_number: str) -> Iterator[None]:
        """An issuer's refusals are audited too: a refusal answers whether a plate exists and
        whether its vehicle may have a mark."""
        try:
            yield
        except VimarkError as exc:
            self._audit(caller, rpc, *_as_recorded(plate_type, plate_number), f"REFUSED_{exc.reason}", 0)
            raise

    @rpc("Issue")
    def Issue(self, request: pb.IssueRequest, context: grpc.ServicerContext, caller: Caller) -> pb.IssueResponse:
        with self._audited_refusals(caller, "Issue", request.plate_type, request.plate_number):
            command = _in_callers_name(
                IssueCommand.parse(
                    request.request_id,
                    request.plate_type,
                    request.plate_number,
                    request.vin,
                    request.reason,
                    request.inspected_on,
                    request.station_id,
                ),
                caller,
            )
            issued = self.issuer.issue(command)
        mark = issued.mark
        outcome = "REPLAYED" if issued.replayed else "ISSUED" if issued.change_id is not None else "COPIED"
        self._audit(caller, "Issue", mark.plate_type, mark.plate_number, outcome, mark.serial)
        # A Verify right after this Issue must see the new mark (None for a replay or a copy: the
        # mark may have been made on another server moments ago; catch up fully).
        self.sync.catch_up(at_least=issued.change_id)
        return _issue_response(mark, issued.replayed)

    @rpc("Verify")
    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext, caller: Caller) -> pb.VerifyResponse:
        _check_qr_text(request.qr_text)
        at = _at_date(request.at_date, caller)
        self.require_ready()
        checked = self.verifier.check(request.qr_text, at)
        self.metrics.verdict_given("Verify", checked.verdict)
        if policy_of(caller).audited:
            self.audit.record(caller, "Verify", *_audited(checked), time.time())
        return checked_response(checked, _view(caller), _language(context))

    @rpc("VerifyBatch", cost=lambda request: _batch_cost(request.qr_texts))
    def VerifyBatch(
        self, request: pb.VerifyBatchRequest, context: grpc.ServicerContext, caller: Caller
    ) -> pb.VerifyBatchResponse:
        _batch_cost(request.qr_texts)  # its item count, checked (rpc() has already charged it by this rule)
        at = _at_date(request.at_date, caller)
        self.require_ready()
        self.metrics.batch_size.observe(len(request.qr_texts))
        results = self.verifier.check_many(list(request.qr_texts), at)
        for v in results:
            self.metrics.verdict_given("VerifyBatch", v.verdict)
        if policy_of(caller).audited:
            self.audit.record_many(caller, "VerifyBatch", [_audited(v) for v in results], time.time())
        view, language = _view(caller), _language(context)
        return pb.VerifyBatchResponse(results=[checked_response(v, view, language) for v in results])

    @rpc("LookupVehicleStatus")
    def LookupVehicleStatus(
        self, request: pb.LookupVehicleStatusRequest, context: grpc.ServicerContext, caller: Caller
    ) -> pb.LookupVehicleStatusResponse:
        at = _at_date(request.at_date, caller)
        self.require_ready()
        by_vin = not (request.plate_number or request.plate_type)
        if not by_vin:
            plate_type = parse_plate_type(request.plate_type)
            plate_number = parse_plate_number(request.plate_number)
            vehicle = self.index.by_plate(plate_type, plate_number)
            wanted = f"{plate_number} (plate type {plate_type})"
        elif request.vin:
            vehicle = self.index.by_vin(parse_vin(request.vin))
            wanted = f"VIN {request.vin}"
        else:
            raise InvalidArgument("plate_number", "give plate_number and plate_type, or vin")
        # A lookup by VIN is recorded as such (the VIN in the plate's place when none is found):
        # guessed VINs show in the trail.
        if vehicle is None:
            missing = "NOT_FOUND_BY_VIN" if by_vin else "NOT_FOUND"
            asked = request.vin if by_vin else request.plate_number
            self._audit(caller, "LookupVehicleStatus", *_as_recorded(request.plate_type, asked), missing, 0)
            raise NotFound(f"no vehicle {wanted}")
        found = "FOUND_BY_VIN" if by_vin else "FOUND"
        self._audit(
            caller, "LookupVehicleStatus", vehicle.plate_type, vehicle.plate_number, found, vehicle.current_serial
        )
        standing = VehicleStanding.of(vehicle, at or china_date(self.verifier.clock()), self.verifier.config)
        # A VIN alone names the plate only to those who may see it: else guessed VINs become plates.
        names_plate = not by_vin or caller.unrestricted or policy_of(caller).vin_lookup_shows_plate
        return lookup_response(standing, _view(caller), names_plate=names_plate)

    @rpc("Present")
    def Present(self, request: pb.PresentRequest, context: grpc.ServicerContext, caller: Caller) -> pb.PresentResponse:
        with self._audited_refusals(caller, "Present", request.plate_type, request.plate_number):
            plate_type = parse_plate_type(request.plate_type)
            plate_number = parse_plate_number(request.plate_number)
            self.require_ready()
            shown = self.issuer.present(plate_type, plate_number, self.presentation_lifetime)
        mark = shown.mark
        self._audit(caller, "Present", mark.plate_type, mark.plate_number, "PRESENTED", mark.serial)
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
        with self._audited_refusals(caller, "DescribeMark", "", ""):
            _check_qr_text(request.qr_text)
            try:
                body = self.verifier.authenticate(request.qr_text).body
            except CertificateError as exc:
                why = f"not an authentic vimark mark ({exc.reason}): {exc.message}"
                raise InvalidArgument("qr_text", why) from None
        self._audit(caller, "DescribeMark", body.plate_type, body.plate_number, "DESCRIBED", body.serial)
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

    @rpc("BackfillMarks")
    def BackfillMarks(
        self, request: pb.BackfillMarksRequest, context: grpc.ServicerContext, caller: Caller
    ) -> Iterator[pb.BackfillMarksProgress]:
        plates, batch_size = backfill.parse_request(request)  # refused here, before the stream starts
        self.require_ready()
        run = backfill.Backfiller(self.store, self.keyring, self.issuer.clock).run(
            issued_by=caller.name,
            issuer_fingerprint=caller.fingerprint,
            plates=plates,
            batch_size=batch_size,
            stopped=lambda: not context.is_active(),  # the client cancelled (Ctrl-C): stop after this batch
        )

        def stream() -> Iterator[pb.BackfillMarksProgress]:
            # Errors inside the stream are past rpc()'s reach: they cross the wire here.
            try:
                for progress in run:
                    if progress.done:  # a Verify right after the last message must see every mark
                        self.sync.catch_up(at_least=progress.last_change_id or None)
                    yield backfill.progress_message(progress)
            except VimarkError as exc:
                abort(context, exc)
            except Exception:
                log.exception("BackfillMarks failed")
                context.abort(grpc.StatusCode.INTERNAL, "BackfillMarks failed inside vimark; see the server log")

        return stream()


def _audited(v: Checked) -> tuple[str, str, str, int]:
    """What the audit log keeps of a verification: plate type and number (authentic marks only), verdict, serial."""
    verdict = pb.Verdict.Name(v.verdict)
    if isinstance(v, ValidMark):
        return f"{v.plate_type:02d}", v.plate_number, verdict, v.serial
    body = v.body
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
        created, updated = self.store.upsert_vehicles(self._registry_rows(request.vehicles, MAX_BATCH))
        self.sync.catch_up()
        return rpb.UpsertVehiclesResponse(created_count=created, updated_count=updated)

    def _registry_rows(self, vehicles: Sequence[rpb.Vehicle], most: int) -> list[VehicleRecord]:
        """A batch's vehicles, each checked (form, and dates possible today); an error names the
        row as vehicles[i].<field>. Done before any write, so no lock is held while parsing."""
        if not 1 <= len(vehicles) <= most:
            raise InvalidArgument("vehicles", f"{len(vehicles)} vehicles; send 1 to {most}")
        records = [parse_vehicle(v, f"vehicles[{i}]") for i, v in enumerate(vehicles)]
        today = china_date(self.clock())
        for i, record in enumerate(records):
            check_registry_dates(record, today, self.rule_config, f"vehicles[{i}]")
        return records

    @rpc("ImportVehicles")
    def ImportVehicles(
        self, requests: Iterator[rpb.ImportVehiclesRequest], context: grpc.ServicerContext, caller: Caller
    ) -> Iterator[rpb.ImportVehiclesResponse]:
        # rpc() has identified the caller and checked the policy; the batches are read (and their
        # errors turned into the call's status) as the stream is answered, in `_import`.
        return self._import(requests, context)

    def _import(
        self, requests: Iterator[rpb.ImportVehiclesRequest], context: grpc.ServicerContext
    ) -> Iterator[rpb.ImportVehiclesResponse]:
        """Each batch parsed on one thread, written (durable on return) on another, then brought
        into the index and acknowledged here (pipeline.staged), so the database's work overlaps
        the Python around it. The first refused batch ends the stream after the batches before
        it are acknowledged; nothing after it is written."""
        batches = staged(
            requests,
            lambda request: (request.sequence, self._registry_rows(request.vehicles, MAX_IMPORT_BATCH)),
            lambda batch: (batch[0], self.store.import_vehicles(batch[1])),
            # flock is not first come, first served: without a pause the next batch, parsed
            # meanwhile, often takes the write lock again before a waiting Issue wakes up.
            pause=IMPORT_PAUSE_SECONDS,
            name="vimark-import",
        )
        try:
            for sequence, result in batches:
                self.sync.catch_up(at_least=result.last_change_id or None)  # in the index, as UpsertVehicles answers
                yield rpb.ImportVehiclesResponse(
                    sequence=sequence, created_count=result.created, updated_count=result.updated
                )
        except VimarkError as exc:
            abort(context, exc)
        except grpc.RpcError:
            return  # the client went away: the batches written so far stay, the rest were not read
        except Exception:
            log.exception("ImportVehicles failed")
            failed = "ImportVehicles failed inside vimark; the server log has the details"
            context.abort(grpc.StatusCode.INTERNAL, failed)
        finally:
            batches.close()  # the reader and the writer stop at their next hand-over

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
