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
from vimark.client.judging import judge, refusal
from vimark.client.messages import EN, say
from vimark.client.trust import Claim, TrustList
from vimark.server import rules
from vimark.server.batcher import InlineSignatures, SignatureChecker, Ticket
from vimark.server.hotpath import AUTHENTIC, FORGED_SIGNATURE, HotPath, ValidMark, hot_path_for
from vimark.server.records import VehicleRecord
from vimark.v1 import mark_service_pb2 as pb

Verdict = pb.Verdict


class IndexView(Protocol):
    """The read-only view of the validity index that verification needs."""

    def for_mark(self, plate_type: str, plate_number: str, vin: str) -> VehicleRecord | None: ...
    def is_revoked(self, serial: int) -> bool: ...


class TrustSource(Protocol):
    def current(self) -> TrustList: ...


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

    def holds_as_current(self, body: cert.CertificateBody) -> bool:
        return body.serial == self.vehicle.current_serial and body.vin == self.vehicle.vin


@dataclass(frozen=True)
class _IndexJudgingView:
    """The validity index as the verdict rules read it (client/judging.py), on one judged date."""

    index: IndexView
    on: dt.date
    config: rules.RuleConfig

    def vehicle_for(self, body: cert.CertificateBody) -> VehicleStanding | None:
        vehicle = self.index.for_mark(body.plate_type, body.plate_number, body.vin)
        return None if vehicle is None else VehicleStanding.of(vehicle, self.on, self.config)

    def is_revoked(self, serial: int) -> bool:
        return self.index.is_revoked(serial)


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
    return Verification(*refusal(exc))


def _forged_signature() -> Verification:
    return _refused(cert.ForgedCertificate("the signature does not verify"))  # what Claim.conclude raises


Checked = ValidMark | Verification  # the compiled path's VALID, or the Python path's verdict


class Verifier:
    def __init__(
        self,
        index: IndexView,
        trust: TrustSource,
        clock: Clock,
        config: rules.RuleConfig = rules.DEFAULT_CONFIG,
        signatures: SignatureChecker | None = None,
        compiled: bool = True,
    ) -> None:
        """`signatures` checks step 8: a started SignatureEngine on a server; by default each
        signature is checked on the calling thread. `compiled`: `check` and `check_many` try the
        compiled path first (server/hotpath.py), when it is built and not disabled."""
        self.index = index
        self.trust = trust
        self.clock = clock
        self.config = config
        self.signatures: SignatureChecker = signatures if signatures is not None else InlineSignatures()
        self.hot = hot_path_for(index) if compiled else None

    def check(self, qr_text: str, at: dt.date | None = None) -> Checked:
        """What Verify answers: a ValidMark when the compiled path finds the mark plainly VALID
        (its signature checked there, the GIL released), else the Python path's Verification."""
        now = self.clock()
        on = at or china_date(now)
        trust = self.trust.current()  # one trust list for the whole check (keys may be reloaded meanwhile)
        found = self.hot.check(qr_text, trust, now, on) if self.hot is not None else None
        if found is None or found is AUTHENTIC:
            return self._verify(qr_text, now, on, trust, authentic=found is AUTHENTIC)
        return _forged_signature() if found is FORGED_SIGNATURE else found  # type: ignore[return-value]

    def verify_many(self, qr_texts: list[str], at: dt.date | None = None) -> list[Verification]:
        """One Verification per text, in order, by the Python path (`check_many` as VerifyBatch answers)."""
        return self._many(qr_texts, at, None)  # type: ignore[return-value]

    def check_many(self, qr_texts: list[str], at: dt.date | None = None) -> list[Checked]:
        """What VerifyBatch answers: `check` of each text, the compiled path decoding and probing
        while the engine checks the signatures."""
        return self._many(qr_texts, at, self.hot)

    def _many(self, qr_texts: list[str], at: dt.date | None, hot: HotPath | None) -> list[Checked]:
        """One result per text, in order; identical texts are checked once. All the signatures go
        to the engine together (in chunks, while the rest are still being decoded)."""
        now = self.clock()
        on = at or china_date(now)
        trust = self.trust.current()
        position: dict[str, int] = {}  # text -> its place among the distinct texts
        claims: list[Claim | ValidMark | Verification] = []
        tickets: list[Ticket] = []
        chunk: list[tuple[bytes, bytes, bytes]] = []
        for text in qr_texts:
            if text in position:
                continue
            position[text] = len(claims)
            found = hot.check(text, trust, now, on, check_signature=False) if hot is not None else None
            if isinstance(found, ValidMark) and found.signed is not None:  # VALID once its signature is
                claims.append(found)
                chunk.append(found.signed)
            else:  # 1-7. Form, seal, key.
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
        results: list[Checked] = []
        for outcome in claims:
            if isinstance(outcome, Verification):  # refused at steps 1-7
                results.append(outcome)
                continue
            if isinstance(outcome, ValidMark):  # VALID but for its signature
                results.append(outcome if next(answers) else _forged_signature())
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
        """The Python path alone: every verdict with its explanation and facts."""
        now = self.clock()
        return self._verify(qr_text, now, at or china_date(now), self.trust.current())

    def _verify(
        self, qr_text: str, now: dt.datetime, on: dt.date, trust: TrustList, authentic: bool = False
    ) -> Verification:
        """`authentic`: the compiled path has checked steps 1-8 (its signature) against `trust` already."""
        try:
            claim = trust.claim(qr_text)
            certificate = claim.conclude(True if authentic else self.signatures.check(*claim.signed))
        except CertificateError as exc:
            return _refused(exc)
        return self._judge(certificate, now, on)

    def authenticate(self, qr_text: str) -> cert.Certificate:
        """Steps 1-9, authenticity: form, seal, key, signature, key life (shared with offline
        terminals). Raises the CertificateError that names the verdict."""
        claim = self.trust.current().claim(qr_text)
        return claim.conclude(self.signatures.check(*claim.signed))

    def _judge(self, certificate: cert.Certificate, now: dt.datetime, on: dt.date) -> Verification:
        """Steps 10-14 for an authentic certificate: the rules shared with terminals (client/judging.py)."""
        j = judge(certificate.body, _IndexJudgingView(self.index, on, self.config), now, on)
        return Verification(j.verdict, j.why, j.facts, certificate.body, certificate.key_id, j.vehicle)
