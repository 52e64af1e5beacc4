"""Verification: decode -> signature -> index -> verdict. Never touches the database.

A verdict is data: every QR text, however broken, gets one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

from vimark.client import certificate as cert
from vimark.client.domain import (
    BLOCKS_ROAD_MASK,
    POLICE_ALERT_MASK,
    Clock,
    Month,
    china_date,
    status_letters,
)
from vimark.client.errors import CertificateError
from vimark.client.messages import EN, say
from vimark.client.trust import Claim, RevokedKey, TrustList
from vimark.server import rules
from vimark.server.batcher import InlineSignatures, SignatureChecker, Ticket
from vimark.server.records import VehicleRecord
from vimark.v1 import mark_service_pb2 as pb

Verdict = pb.Verdict


class IndexView(Protocol):
    """The read-only view of the validity index that verification needs."""

    def by_plate(self, plate_type: str, plate_number: str) -> VehicleRecord | None: ...
    def is_revoked(self, serial: int) -> bool: ...


class TrustSource(Protocol):
    def current(self) -> TrustList: ...


_VERDICT_OF_ERROR = {
    cert.MalformedCertificate: Verdict.VERDICT_MALFORMED,
    cert.UnknownKey: Verdict.VERDICT_UNKNOWN_KEY,
    cert.ForgedCertificate: Verdict.VERDICT_FORGED,
    RevokedKey: Verdict.VERDICT_REVOKED,
}
# VerifyBatch hands signatures to the engine in chunks of this many, so the workers check the
# first chunks while this thread still decodes the rest (measured: load/verify_engine.py).
_SUBMIT_CHUNK = 32


@dataclass(frozen=True)
class VehicleStanding:
    """A vehicle's standing on a date: what Lookup shows and Verify adds to a verdict."""

    vehicle: VehicleRecord
    within_validity: bool
    overdue_cycles: int
    status_letters: str  # stored letters plus Q when overdue
    valid_until: Month  # the recorded validity, or for a vehicle imported without one its first due month

    @classmethod
    def of(cls, vehicle: VehicleRecord, on: dt.date, config: rules.RuleConfig) -> VehicleStanding:
        if vehicle.valid_until is not None and rules.within_validity(vehicle.valid_until, on):  # the common case
            return cls(vehicle, True, 0, status_letters(vehicle.status_bits), vehicle.valid_until)
        facts = vehicle.facts()
        # A vehicle with no recorded validity is within its implicit first validity until its first
        # due month has ended (rules.overdue): a new car is not fined for having no mark yet.
        overdue = rules.overdue(facts, vehicle.valid_until, on, config)
        cycles = rules.overdue_cycles(facts, vehicle.valid_until, on, config)
        letters = status_letters(vehicle.status_bits)
        if overdue:
            letters = ("" if letters == "A" else letters) + "Q"
        within = not overdue
        valid_until = vehicle.valid_until if vehicle.valid_until is not None else rules.first_due(facts, config)
        return cls(vehicle, within, cycles, letters, valid_until)

    @property
    def blocked(self) -> bool:
        return bool(self.vehicle.status_bits & BLOCKS_ROAD_MASK)

    @property
    def police_alert(self) -> bool:
        return bool(self.vehicle.status_bits & POLICE_ALERT_MASK)

    @property
    def scrapping_due(self) -> bool:
        return rules.scrapping_due(self.overdue_cycles)


@dataclass(frozen=True)
class Verification:
    verdict: int  # Verdict
    why: str  # its explanation's key in the message catalogue (client/messages.py)
    facts: Mapping[str, object]  # what the explanation names (month, serial, the decoder's detail...)
    body: cert.CertificateBody | None = None  # set once the certificate is authentic
    key_id: int = 0
    standing: VehicleStanding | None = None  # set once the vehicle is known

    def explain(self, language: str = EN) -> str:
        return say(self.why, language, **self.facts)

    @property
    def explanation(self) -> str:
        return self.explain(EN)


def _refused(exc: CertificateError) -> Verification:
    verdict = _VERDICT_OF_ERROR.get(type(exc), Verdict.VERDICT_MALFORMED)
    why = "verdict.REVOKED_KEY" if verdict == Verdict.VERDICT_REVOKED else f"verdict.{Verdict.Name(verdict)[8:]}"
    return Verification(verdict, why, {"detail": exc.message})


class Verifier:
    def __init__(
        self,
        index: IndexView,
        trust: TrustSource,
        clock: Clock,
        config: rules.RuleConfig = rules.DEFAULT_CONFIG,
        signatures: SignatureChecker | None = None,
    ) -> None:
        """`signatures` checks step 8: a started SignatureEngine on a server; by default each
        signature is checked on the calling thread."""
        self.index = index
        self.trust = trust
        self.clock = clock
        self.config = config
        self.signatures: SignatureChecker = signatures if signatures is not None else InlineSignatures()

    def verify_many(self, qr_texts: list[str], at: dt.date | None = None) -> list[Verification]:
        """One result per text, in order; identical texts are checked once. All the signatures go
        to the engine together (in chunks, while the rest are still being decoded)."""
        now = self.clock()
        on = at or china_date(now)
        trust = self.trust.current()
        position: dict[str, int] = {}  # text -> its place among the distinct texts
        claims: list[Claim | Verification] = []
        tickets: list[Ticket] = []
        chunk: list[tuple[bytes, bytes, bytes]] = []
        for text in qr_texts:
            if text in position:
                continue
            position[text] = len(claims)
            # 1-7. Form, seal, key.
            try:
                claim = trust.claim(text)
            except CertificateError as exc:
                claims.append(_refused(exc))
                continue
            claims.append(claim)
            chunk.append(claim.signed)
            if len(chunk) == _SUBMIT_CHUNK:
                tickets.append(self.signatures.submit_many(chunk))
                chunk = []
        if chunk:
            tickets.append(self.signatures.submit_many(chunk))
        # 8. The signatures' answers, in submission order, as each chunk completes.
        answers: Iterator[bool] = chain.from_iterable(ticket.result() for ticket in tickets)
        results: list[Verification] = []
        for outcome in claims:
            if isinstance(outcome, Verification):  # refused at steps 1-7
                results.append(outcome)
                continue
            # 8-9. Signature and key life, then 10-14.
            try:
                certificate = outcome.conclude(next(answers))
            except CertificateError as exc:
                results.append(_refused(exc))
                continue
            results.append(self._judge(certificate, now, on))
        return [results[position[text]] for text in qr_texts]

    def verify(self, qr_text: str, at: dt.date | None = None) -> Verification:
        now = self.clock()
        on = at or china_date(now)
        try:
            certificate = self.authenticate(qr_text)
        except CertificateError as exc:
            return _refused(exc)
        return self._judge(certificate, now, on)

    def authenticate(self, qr_text: str) -> cert.Certificate:
        """Steps 1-9, authenticity: form, seal, key, signature, key life (shared with offline
        terminals). Raises the CertificateError that names the verdict."""
        claim = self.trust.current().claim(qr_text)
        return claim.conclude(self.signatures.check(*claim.signed))

    def _judge(self, certificate: cert.Certificate, now: dt.datetime, on: dt.date) -> Verification:
        """Steps 10-14 for an authentic certificate."""
        body = certificate.body

        def verdict(v: int, standing: VehicleStanding | None = None, **facts: object) -> Verification:
            return Verification(v, f"verdict.{Verdict.Name(v)[8:]}", facts, body, certificate.key_id, standing)

        # 10. The vehicle's current record.
        vehicle = self.index.by_plate(body.plate_type, body.plate_number)
        if vehicle is None:
            return verdict(Verdict.VERDICT_UNKNOWN_VEHICLE)
        standing = VehicleStanding.of(vehicle, on, self.config)
        # 11. A status that forbids the road overrides whatever the mark says (even an old screenshot).
        if standing.blocked:
            return verdict(Verdict.VERDICT_VEHICLE_BLOCKED, standing)
        # 12. A live QR lives minutes, judged by the real clock (a screenshot must not pass later).
        if (
            body.presentation == cert.Presentation.PRESENTATION_ONLINE
            and now.timestamp() > body.presentation_expires_at
        ):
            return verdict(Verdict.VERDICT_PRESENTATION_EXPIRED, standing)
        # 13. Revoked, then superseded: only the vehicle's current mark counts.
        if self.index.is_revoked(body.serial):
            return verdict(Verdict.VERDICT_REVOKED, standing, serial=body.serial)
        if body.serial != vehicle.current_serial or body.vin != vehicle.vin:
            return verdict(Verdict.VERDICT_SUPERSEDED, standing)
        # 14. Inspection validity on the judged date. Before the validity this mark attests was
        # granted, it shows nothing (the vehicle may have been overdue and inspected since).
        if on < body.valid_from:
            return verdict(Verdict.VERDICT_NOT_YET_VALID, standing, valid_from=body.valid_from, on=on)
        if not rules.within_validity(body.valid_until, on):
            return verdict(Verdict.VERDICT_INSPECTION_EXPIRED, standing, month=body.valid_until_text)
        return verdict(Verdict.VERDICT_VALID, standing, month=body.valid_until_text)
