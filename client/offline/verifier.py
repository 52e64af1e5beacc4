"""The offline verifier a police terminal runs when the network drops: the same verdicts as
`Verify` gives police, from a signed trust bundle and status snapshot, and when they were made.

Authenticity is client/trust.py's and the verdict rules client/judging.py's, exactly as on the
server: this module only supplies the snapshot as the judging view and says what it cannot know.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vimark.client import certificate as cert
from vimark.client.domain import (
    BLOCKS_ROAD_MASK,
    CHINA_TIME,
    POLICE_ALERT_MASK,
    Clock,
    china_date,
    status_letters,
    system_clock,
)
from vimark.client.errors import CertificateError
from vimark.client.judging import judge, refusal
from vimark.client.messages import EN, say
from vimark.client.offline.bundle import TrustBundle
from vimark.client.offline.directory import TerminalDirectory
from vimark.client.offline.status import StatusState
from vimark.v1 import mark_service_pb2 as pb

Verdict = pb.Verdict
# VerifyResponse fields a police answer has that the snapshot cannot give (always left empty).
NOT_KNOWN_OFFLINE = ("current_serial", "current_valid_until", "within_validity", "overdue_cycles", "scrapping_due")


@dataclass(frozen=True)
class _SnapshotVehicle:
    status_bits: int  # from the hotlist; 0 when the plate is not on it
    current: bool

    @property
    def blocked(self) -> bool:
        return bool(self.status_bits & BLOCKS_ROAD_MASK)

    def holds_as_current(self, body: cert.CertificateBody) -> bool:
        return self.current


@dataclass(frozen=True)
class _SnapshotView:
    """The status snapshot as the verdict rules read it (client/judging.py)."""

    state: StatusState

    def vehicle_for(self, body: cert.CertificateBody) -> _SnapshotVehicle | None:
        if body.serial in self.state.unknown_vehicle:
            return None
        return _SnapshotVehicle(
            self.state.status_bits(body.plate_type, body.plate_number), self.state.is_current(body.serial)
        )

    def is_revoked(self, serial: int) -> bool:
        return serial in self.state.revoked


@dataclass(frozen=True)
class OfflineVerification:
    verdict: int  # Verdict; UNSPECIFIED when the data cannot confirm (stale, or a mark newer than it)
    why: str  # the explanation's key in the message catalogue
    facts: Mapping[str, object]
    body: cert.CertificateBody | None
    key_id: int
    status_codes: str  # the letters of a blocked or flagged vehicle (hotlist); "" when not known offline
    police_alert: bool
    bundle_made_at: dt.datetime
    status_made_at: dt.datetime
    stale_since: dt.datetime | None  # the earliest moment bundle or status went past its maximum age

    def explain(self, language: str = EN) -> str:
        return say(self.why, language, **self.facts)

    @property
    def not_known(self) -> tuple[str, ...]:
        """The police answer's fields this one leaves empty because offline data cannot know them."""
        return NOT_KNOWN_OFFLINE + (() if self.status_codes or self.body is None else ("status_codes",))

    def response(self, language: str = EN) -> pb.VerifyResponse:
        """As the police view of `Verify` (server/views.py), with the fields it cannot know empty."""
        r = pb.VerifyResponse(verdict=self.verdict, explanation=self.explain(language))  # type: ignore[arg-type]
        if self.body is not None:
            b = self.body
            r.serial, r.plate_number, r.plate_type, r.vin = b.serial, b.plate_number, b.plate_type, b.vin
            r.valid_until = b.valid_until_text
            r.presentation = b.presentation  # type: ignore[assignment]
            r.issue_time.FromSeconds(b.issued_at)
            r.reason = b.reason  # type: ignore[assignment]
            r.key_id = self.key_id
            r.status_codes = self.status_codes
            r.police_alert = self.police_alert
        return r


class OfflineVerifier:
    def __init__(self, bundle: TrustBundle, status: StatusState, clock: Clock = system_clock) -> None:
        self.bundle = bundle
        self.status = status
        self.clock = clock
        self._view = _SnapshotView(status)

    @classmethod
    def open(cls, directory: Path | str, clock: Clock = system_clock) -> OfflineVerifier:
        """From a terminal directory (`vimark terminal sync`); every signature is checked again."""
        d = TerminalDirectory(directory)
        return cls(d.bundle(), d.status(), clock)

    def stale_since(self, now: dt.datetime) -> dt.datetime | None:
        since = min(self.bundle.stale_since(), self.status.stale_since())
        return since if now > since else None

    def verify(self, qr_text: str) -> OfflineVerification:
        now = self.clock()
        on = china_date(now)
        stale = self.stale_since(now)

        def answer(
            verdict: int, why: str, facts: Mapping[str, object], c: cert.Certificate | None = None, bits: int = -1
        ) -> OfflineVerification:
            letters = status_letters(bits) if bits > 0 else ""
            return OfflineVerification(
                verdict,
                why,
                facts,
                c.body if c else None,
                c.key_id if c else 0,
                letters,
                bits > 0 and bool(bits & POLICE_ALERT_MASK),
                self.bundle.made_at,
                self.status.made_at,
                stale,
            )

        # 1-9. Authenticity, from the bundle's keys: a forgery stays a forgery however old the bundle.
        try:
            certificate = self.bundle.trust.authenticate(qr_text)
        except CertificateError as exc:
            return answer(*refusal(exc))
        body = certificate.body
        # 10-14. The verdict rules, shared with the server, on the snapshot.
        j = judge(body, self._view, now, on)
        bits = j.vehicle.status_bits if j.vehicle is not None else 0  # as stored: Q is not derived offline
        verdict, why, facts = j.verdict, j.why, j.facts
        if verdict == Verdict.VERDICT_SUPERSEDED and not self.status.covers(body.serial):
            # Below the range the status data covers (its validity month ended, and it is no
            # vehicle's current mark): the server may say SUPERSEDED or UNKNOWN_VEHICLE, the
            # snapshot cannot tell which, so it does not pretend to.
            if body.serial < self.status.first_serial:
                verdict, why, facts = Verdict.VERDICT_UNSPECIFIED, "offline.OLDER_THAN_STATUS", {}
            else:  # issued after the snapshot was made: it cannot say whether it is current
                made = {"made": _shown(self.status.made_at)}
                verdict, why, facts = Verdict.VERDICT_UNSPECIFIED, "offline.NEWER_THAN_STATUS", made
        elif verdict == Verdict.VERDICT_SUPERSEDED and body.serial in self.status.missing:
            # Its serial was taken but not yet committed when the store was read: as newer.
            made = {"made": _shown(self.status.made_at)}
            verdict, why, facts = Verdict.VERDICT_UNSPECIFIED, "offline.NEWER_THAN_STATUS", made
        if verdict == Verdict.VERDICT_VALID and stale is not None:
            # Past the data's maximum age nothing is VALID: it may be stolen or superseded since.
            verdict, why, facts = Verdict.VERDICT_UNSPECIFIED, "offline.STALE", {"since": _shown(stale)}
        return answer(verdict, why, facts, certificate, bits)

    def lookup_plate(self, plate_type: str, plate_number: str) -> PlateCheck:
        """A plate typed by hand, checked against the hotlist: blocked or flagged, with its status
        letters, or not on it (which says nothing more: the hotlist holds no other vehicle)."""
        now = self.clock()
        bits = self.status.status_bits(plate_type, plate_number)
        stale = self.status.stale_since()
        return PlateCheck(
            plate_type,
            plate_number,
            status_letters(bits) if bits else "",
            bool(bits & BLOCKS_ROAD_MASK),
            bool(bits & POLICE_ALERT_MASK),
            self.status.made_at,
            stale if now > stale else None,
        )


@dataclass(frozen=True)
class PlateCheck:
    """A hand-typed plate against the offline hotlist."""

    plate_type: str
    plate_number: str
    status_codes: str  # the letters when the plate is on the hotlist, else ""
    blocked: bool  # its status forbids the road (VEHICLE_BLOCKED for any mark it shows)
    police_alert: bool
    status_made_at: dt.datetime
    stale_since: dt.datetime | None  # past the status data's maximum age: not on it proves nothing

    @property
    def on_hotlist(self) -> bool:
        return bool(self.status_codes)


def _shown(at: dt.datetime) -> str:
    return at.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M CST")
