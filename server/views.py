"""Who asks decides what is shown: every response is cut to the caller's role here, and only here."""

from __future__ import annotations

import enum

from google.protobuf.timestamp_pb2 import Timestamp

from vimark.client.domain import STATUS_CODES, format_month
from vimark.server.verifier import VehicleStanding, Verdict, Verification
from vimark.v1 import mark_service_pb2 as pb


class Role(enum.Enum):
    POLICE = "police"  # handheld terminals: full status
    PUBLIC = "public"  # the public app: valid or not, plate, valid-until
    PARTNER = "partner"  # insurers, rental and used-car platforms
    ISSUER = "issuer"  # inspection stations and the registration system
    OPERATOR = "operator"  # vimark's operators


def _timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def status_code_messages(letters: str) -> list[pb.StatusCode]:
    return [pb.StatusCode(code=c, name=f"{STATUS_CODES[c].name_zh} {STATUS_CODES[c].name_en}") for c in letters]


def verify_response(v: Verification, role: Role) -> pb.VerifyResponse:
    if role is Role.PUBLIC:
        # The public learns valid or not, and for an authentic mark its plate and month: never why.
        valid = v.verdict == Verdict.VERDICT_VALID
        response = pb.VerifyResponse(
            verdict=Verdict.VERDICT_VALID if valid else Verdict.VERDICT_NOT_VALID,
            explanation="valid" if valid else "not valid",
        )
        if v.body is not None:
            response.plate_number = v.body.plate_number
            response.plate_type = v.body.plate_type
            response.valid_until = v.body.valid_until_text
        return response
    response = pb.VerifyResponse(verdict=v.verdict, explanation=v.explanation)  # type: ignore[arg-type]
    if v.body is not None:
        body = v.body
        response.serial = body.serial
        response.plate_number = body.plate_number
        response.plate_type = body.plate_type
        response.vin = body.vin
        response.valid_until = body.valid_until_text
        response.presentation = body.presentation  # type: ignore[assignment]
        response.issued_time.CopyFrom(_timestamp(body.issued_at))
        response.reason = body.reason  # type: ignore[assignment]
        response.key_id = v.key_id
    if v.standing is not None:
        s = v.standing
        response.within_validity = s.within_validity
        if s.vehicle.valid_until:
            response.current_valid_until = format_month(s.vehicle.valid_until)
        if role in (Role.POLICE, Role.OPERATOR):
            response.status_codes.extend(status_code_messages(s.status_letters))
            response.current_serial = s.vehicle.current_serial
            response.overdue_cycles = s.overdue_cycles
            response.scrapping_due = s.scrapping_due
            response.police_alert = s.police_alert
    return response


def lookup_response(s: VehicleStanding, role: Role) -> pb.LookupVehicleStatusResponse:
    v = s.vehicle
    response = pb.LookupVehicleStatusResponse(
        plate_number=v.plate_number,
        plate_type=v.plate_type,
        valid_until=format_month(v.valid_until) if v.valid_until else "",
        within_validity=s.within_validity,
        current_serial=v.current_serial,
        blocked=s.blocked,
    )
    if role in (Role.POLICE, Role.OPERATOR):
        response.vin = v.vin
        response.status_codes.extend(status_code_messages(s.status_letters))
        response.overdue_cycles = s.overdue_cycles
        response.scrapping_due = s.scrapping_due
        response.police_alert = s.police_alert
    return response


def may_see_seal_keys(role: Role) -> bool:
    return role in (Role.POLICE, Role.OPERATOR)


def may_judge_another_date(role: Role) -> bool:
    """`at_date` is for police and partners (was it valid on the day of the accident?). The public
    sees today's valid / not valid only: answers on chosen dates would tell an overdue car from a
    stolen or superseded one, and when its validity began."""
    return role is not Role.PUBLIC
