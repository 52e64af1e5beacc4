"""Who asks decides what is shown: every response is cut to the caller's view here, and only here.
Which role has which view is the policy table's (policy.py)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from vimark.client.domain import format_month
from vimark.client.messages import EN, say
from vimark.server.policy import View
from vimark.server.verifier import VehicleStanding, Verdict, Verification
from vimark.v1 import mark_service_pb2 as pb


def verify_response(v: Verification, view: View, language: str = EN) -> pb.VerifyResponse:
    if view is View.VALID_OR_NOT:
        # The public learns valid or not, and for an authentic mark its plate and month: never why.
        valid = v.verdict == Verdict.VERDICT_VALID
        response = pb.VerifyResponse(
            verdict=Verdict.VERDICT_VALID if valid else Verdict.VERDICT_NOT_VALID,
            explanation=say("public.VALID" if valid else "public.NOT_VALID", language),
        )
        if v.body is not None:
            response.plate_number = v.body.plate_number
            response.plate_type = v.body.plate_type
            response.valid_until = v.body.valid_until_text
        return response
    response = pb.VerifyResponse(verdict=v.verdict, explanation=v.explain(language))  # type: ignore[arg-type]
    if v.body is not None:
        body = v.body
        response.serial = body.serial
        response.plate_number = body.plate_number
        response.plate_type = body.plate_type
        response.vin = body.vin
        response.valid_until = body.valid_until_text
        response.presentation = body.presentation  # type: ignore[assignment]
        response.issue_time.CopyFrom(Timestamp(seconds=body.issued_at))
        response.reason = body.reason  # type: ignore[assignment]
        response.key_id = v.key_id
    if v.standing is not None:
        s = v.standing
        response.within_validity = s.within_validity
        response.current_valid_until = format_month(s.valid_until)
        if view is View.FULL:
            response.status_codes = s.status_letters
            response.current_serial = s.vehicle.current_serial
            response.overdue_cycles = s.overdue_cycles
            response.scrapping_due = s.scrapping_due
            response.police_alert = s.police_alert
    return response


def lookup_response(s: VehicleStanding, view: View, *, names_plate: bool = True) -> pb.LookupVehicleStatusResponse:
    """`names_plate` False (a lookup by VIN for a role that may not learn plates that way): the
    validity and whether the vehicle is blocked, nothing that names it (plate, mark serial)."""
    v = s.vehicle
    response = pb.LookupVehicleStatusResponse(
        valid_until=format_month(s.valid_until), within_validity=s.within_validity, blocked=s.blocked
    )
    if names_plate:
        response.plate_number = v.plate_number
        response.plate_type = v.plate_type
        response.current_serial = v.current_serial
    if view is View.FULL:
        response.vin = v.vin
        response.status_codes = s.status_letters
        response.overdue_cycles = s.overdue_cycles
        response.scrapping_due = s.scrapping_due
        response.police_alert = s.police_alert
    return response
