"""Who asks decides what is shown: every response is cut to the caller's view here, and only here.
Which role has which view is the policy table's (policy.py)."""

from __future__ import annotations

import functools

from google.protobuf.timestamp_pb2 import Timestamp

from vimark.client.domain import POLICE_ALERT_MASK, format_month, status_letters
from vimark.client.messages import EN, say
from vimark.server import rules
from vimark.server.hotpath import ValidMark
from vimark.server.policy import View
from vimark.server.verifier import Checked, VehicleStanding, Verdict, Verification
from vimark.v1 import mark_service_pb2 as pb


def checked_response(c: Checked, view: View, language: str = EN) -> pb.VerifyResponse:
    return valid_response(c, view, language) if isinstance(c, ValidMark) else verify_response(c, view, language)


# The pieces of a VALID reply that many marks share: a month's text, the explanation for a month, status letters.
_month_text = functools.cache(format_month)
_letters = functools.cache(status_letters)


@functools.cache
def _valid_explanation(month: int, language: str) -> str:
    return say("verdict.VALID", language, month=_month_text(month))


def valid_response(m: ValidMark, view: View, language: str = EN) -> pb.VerifyResponse:
    """verify_response of a VALID verification, from the compiled path's fields in one constructor
    call (tests/test_hotpath.py holds the two equal for every view)."""
    month = _month_text(m.valid_until)
    plate_type = f"{m.plate_type:02d}"
    if view is View.VALID_OR_NOT:
        return pb.VerifyResponse(
            verdict=Verdict.VERDICT_VALID,
            explanation=say("public.VALID", language),
            plate_number=m.plate_number,
            plate_type=plate_type,
            valid_until=month,
        )
    full = view is View.FULL  # status, alerts and the current serial: police only (zero values are unset)
    return pb.VerifyResponse(
        verdict=Verdict.VERDICT_VALID,
        explanation=_valid_explanation(m.valid_until, language),
        serial=m.serial,
        plate_number=m.plate_number,
        plate_type=plate_type,
        vin=m.vin,
        valid_until=month,
        presentation=m.presentation,  # type: ignore[arg-type]
        issue_time=Timestamp(seconds=m.issued_at),
        reason=m.reason,  # type: ignore[arg-type]
        key_id=m.key_id,
        within_validity=True,
        current_valid_until=_month_text(m.current_valid_until),
        status_codes=_letters(m.status_bits) if full else "",
        current_serial=m.serial if full else 0,  # VALID: the mark is its vehicle's current one
        scrapping_due=full and rules.scrapping_due(0),  # within validity: no overdue cycles
        police_alert=full and bool(m.status_bits & POLICE_ALERT_MASK),
    )


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
