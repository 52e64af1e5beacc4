"""The verdict rules, once: what an authentic mark's verdict is, given a view of the vehicles.

Authenticity (steps 1-9) is client/trust.py's. The steps after it (10-14: the vehicle, blocked,
live-QR lifetime, revoked, superseded, validity) are here and nowhere else. They read a
`JudgingView`: on a server its validity index (server/verifier.py), on a police terminal the
signed status snapshot (client/offline/). Both therefore give the same verdict for the same facts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from vimark.client import certificate as cert
from vimark.client.domain import month_end
from vimark.client.errors import CertificateError
from vimark.client.trust import RevokedKey
from vimark.v1 import mark_service_pb2 as pb

Verdict = pb.Verdict

_VERDICT_OF_ERROR: Mapping[type[CertificateError], int] = {
    cert.MalformedCertificate: Verdict.VERDICT_MALFORMED,
    cert.UnknownKey: Verdict.VERDICT_UNKNOWN_KEY,
    cert.ForgedCertificate: Verdict.VERDICT_FORGED,
    RevokedKey: Verdict.VERDICT_REVOKED,
}


class VehicleAnswer(Protocol):
    """What a view knows of the vehicle that holds a mark's plate now."""

    @property
    def blocked(self) -> bool: ...

    def holds_as_current(self, body: cert.CertificateBody) -> bool:
        """Whether `body` is this vehicle's current mark (its serial and its VIN)."""
        ...


V = TypeVar("V", bound=VehicleAnswer, covariant=True)


class JudgingView(Protocol[V]):
    """The read-only facts the verdict rules need: the server's index, or a terminal's snapshot."""

    def vehicle_for(self, body: cert.CertificateBody) -> V | None:
        """The vehicle holding the mark's plate (plate type and number) now; None if none does."""
        ...

    def is_revoked(self, serial: int) -> bool: ...


W = TypeVar("W", bound=VehicleAnswer)


@dataclass(frozen=True)
class Judgement(Generic[W]):
    verdict: int  # Verdict
    why: str  # the explanation's key in the message catalogue (client/messages.py)
    facts: Mapping[str, object]  # what the explanation names
    vehicle: W | None  # the view's answer for the vehicle, once it is known


def verdict_key(verdict: int) -> str:
    return f"verdict.{Verdict.Name(verdict)[8:]}"  # type: ignore[arg-type]


def refusal(exc: CertificateError) -> tuple[int, str, Mapping[str, object]]:
    """The verdict, explanation key and facts of a mark refused at steps 1-9."""
    verdict = _VERDICT_OF_ERROR.get(type(exc), Verdict.VERDICT_MALFORMED)
    why = "verdict.REVOKED_KEY" if verdict == Verdict.VERDICT_REVOKED else verdict_key(verdict)
    return verdict, why, {"detail": exc.message}


def within_validity(valid_until: int, on: dt.date) -> bool:
    """Validity is recorded to the month: valid through the last day of `valid_until`."""
    return on <= month_end(valid_until)


def judge(body: cert.CertificateBody, view: JudgingView[W], now: dt.datetime, on: dt.date) -> Judgement[W]:
    """Steps 10-14 for an authentic certificate body, judged on the date `on` (the live QR's
    lifetime by the real instant `now`)."""

    def verdict(v: int, vehicle: W | None = None, **facts: object) -> Judgement[W]:
        return Judgement(v, verdict_key(v), facts, vehicle)

    # 10. The vehicle holding the mark's plate now.
    vehicle = view.vehicle_for(body)
    if vehicle is None:
        return verdict(Verdict.VERDICT_UNKNOWN_VEHICLE)
    # 11. A status that forbids the road overrides whatever the mark says (even an old screenshot).
    if vehicle.blocked:
        return verdict(Verdict.VERDICT_VEHICLE_BLOCKED, vehicle)
    # 12. A live QR lives minutes, judged by the real clock (a screenshot must not pass later).
    if body.presentation == cert.Presentation.PRESENTATION_ONLINE and now.timestamp() > body.presentation_expires_at:
        return verdict(Verdict.VERDICT_PRESENTATION_EXPIRED, vehicle)
    # 13. Revoked, then superseded: only the vehicle's current mark counts.
    if view.is_revoked(body.serial):
        return verdict(Verdict.VERDICT_REVOKED, vehicle, serial=body.serial)
    if not vehicle.holds_as_current(body):
        return verdict(Verdict.VERDICT_SUPERSEDED, vehicle)
    # 14. Inspection validity on the judged date. Before the validity this mark attests was
    # granted, it shows nothing (the vehicle may have been overdue and inspected since).
    if on < body.valid_from:
        return verdict(Verdict.VERDICT_NOT_YET_VALID, vehicle, valid_from=body.valid_from, on=on)
    if not within_validity(body.valid_until, on):
        return verdict(Verdict.VERDICT_INSPECTION_EXPIRED, vehicle, month=body.valid_until_text)
    return verdict(Verdict.VERDICT_VALID, vehicle, month=body.valid_until_text)
