"""Issuance: rules -> sign -> store (mark, vehicle, change log in one transaction).

This module and keys.py are the only holders of the private signing key; nothing here parses
a scanned QR.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vimark.client import certificate as cert
from vimark.client.domain import (
    BLOCKS_ROAD_MASK,
    Clock,
    china_date,
    parse_date,
    parse_plate_number,
    parse_plate_type,
    parse_vin,
)
from vimark.client.errors import InvalidArgument, NotFound, RuleViolation
from vimark.server import rules
from vimark.server.keys import KeyRing
from vimark.server.records import CopyPlan, MarkPlan, MarkRecord, VehicleRecord

_REASON_VALUES = frozenset(r.value for r in rules.IssueReason)
MAX_REQUEST_ID = 64
MAX_STATION_ID = 64  # a station's certificate id (server/auth.py CALLER_ID)


class MarkTerms(Protocol):
    """What a certificate says of a mark, whether just decided (MarkPlan) or stored (MarkRecord)."""

    @property
    def valid_until(self) -> int: ...
    @property
    def valid_from(self) -> dt.date: ...
    @property
    def reason(self) -> int: ...
    @property
    def issued_at(self) -> dt.datetime: ...


class IssuingStore(Protocol):
    """What issuance needs of the store."""

    def mark_by_serial(self, serial: int) -> MarkRecord | None: ...

    def issue(
        self,
        request_id: str,
        plate_type: str,
        plate_number: str,
        decide: Callable[[VehicleRecord, MarkRecord | None], MarkPlan | CopyPlan],
        sign: Callable[[int, VehicleRecord, MarkTerms], tuple[str, int]],
        digest: str = "",
    ) -> tuple[MarkRecord, bool, int | None, str]: ...


class VehicleView(Protocol):
    """What presenting a mark needs of the validity index."""

    def by_plate(self, plate_type: str, plate_number: str) -> VehicleRecord | None: ...
    def is_revoked(self, serial: int) -> bool: ...


@dataclass(frozen=True)
class Issued:
    """An Issue's answer: the mark, whether it replays an earlier request, and the change-log id
    that made it current (None for a replay or a copy: no mark was written). Returned after the commit."""

    mark: MarkRecord
    replayed: bool
    change_id: int | None


@dataclass(frozen=True)
class IssueCommand:
    """A checked Issue request."""

    request_id: str
    plate_type: str
    plate_number: str
    vin: str
    reason: int  # IssueReason
    inspected_on: dt.date | None
    station_id: str
    issued_by: str = ""  # the calling certificate, role/caller_id
    issuer_fingerprint: str = ""  # its SHA-256, hex

    def digest(self) -> str:
        """What makes two requests under one request id the same request (the caller included)."""
        fields = [self.plate_type, self.plate_number, self.vin, str(self.reason), str(self.inspected_on or "")]
        fields += [self.station_id, self.issued_by]
        return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()

    @classmethod
    def parse(
        cls,
        request_id: str,
        plate_type: str,
        plate_number: str,
        vin: str,
        reason: int,
        inspected_on: str,
        station_id: str,
    ) -> IssueCommand:
        if not request_id:
            raise InvalidArgument("request_id", "required (an idempotency key chosen by the caller)")
        if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
            raise InvalidArgument("request_id", f"at most {MAX_REQUEST_ID} printable characters")
        if reason not in _REASON_VALUES:
            raise InvalidArgument("reason", "required: one of " + ", ".join(r.label for r in rules.IssueReason))
        inspection = reason == cert.IssueReason.ISSUE_REASON_INSPECTION_PASSED
        if inspection and not inspected_on:
            raise InvalidArgument("inspected_on", "an inspection_passed mark needs the inspection date")
        if len(station_id) > MAX_STATION_ID or not station_id.isprintable():
            raise InvalidArgument("station_id", f"at most {MAX_STATION_ID} printable characters")
        return cls(
            request_id=request_id,
            plate_type=parse_plate_type(plate_type),
            plate_number=parse_plate_number(plate_number),
            vin=parse_vin(vin) if vin else "",
            reason=reason,
            inspected_on=parse_date(inspected_on, "inspected_on") if inspected_on else None,
            station_id=station_id,
        )


class Signer:
    """Signs and seals certificate bodies with the active keys; the key ring can be swapped
    (rotation) while the server runs."""

    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring
        self._lock = threading.Lock()

    def replace(self, keyring: KeyRing) -> None:
        with self._lock:
            self._keyring = keyring

    def active_key_id(self) -> int:
        """The key that signs new marks now (0: none)."""
        with self._lock:
            return self._keyring.active_key_id

    def sign(self, body: cert.CertificateBody) -> tuple[str, int]:
        """Returns (QR text, signing key id)."""
        with self._lock:
            ring = self._keyring
        key_id, signing_key = ring.active_signing_key()
        body_bytes = body.to_bytes()
        signature = signing_key.sign(cert.signed_message(key_id, body_bytes))
        seal = (ring.active_seal_key_id, ring.seal_keys[ring.active_seal_key_id])
        return cert.encode(body_bytes, key_id, signature, seal), key_id


class Issuer:
    def __init__(
        self,
        store: IssuingStore,
        signer: Signer,
        clock: Clock,
        config: rules.RuleConfig = rules.DEFAULT_CONFIG,
        *,
        vehicles: VehicleView | None = None,
    ) -> None:
        self.store = store
        self.vehicles = vehicles  # the validity index, for present(); bulk tools issue without one
        self.signer = signer
        self.clock = clock
        self.config = config

    def issue(self, command: IssueCommand) -> Issued:
        """Issue, and say which change-log id the index must reach to show the new mark."""
        now = self.clock()
        today = china_date(now)

        def decide(vehicle: VehicleRecord, current: MarkRecord | None) -> MarkPlan | CopyPlan:
            if command.vin and command.vin != vehicle.vin:
                raise InvalidArgument("vin", f"{command.vin} is not the registered VIN of {vehicle.plate_number}")
            reason = rules.IssueReason(command.reason)
            live = current if current is not None and not current.revoked else None
            if reason in rules.REISSUE_REASONS and current is not None and live is None:
                raise RuleViolation(
                    f"mark {current.serial} was revoked: a new validity needs an inspection or exemption",
                    reason="MARK_REVOKED",
                )
            valid_until = rules.new_valid_until(
                vehicle.facts(), reason, vehicle.valid_until, today, command.inspected_on, self.config
            )
            if reason in rules.COPY_REASONS and live is not None:
                # A copy is the current mark again (same serial, same validity): the owner's other
                # copies stay valid. Signed afresh only if its key no longer signs.
                return CopyPlan(resign=live.key_id != self.signer.active_key_id())
            # The validity this mark attests began when it was granted: an unbroken validity (a copy,
            # or a renewal before the old one ended) keeps its start; otherwise it starts now (or on
            # the inspection day).
            if live is not None and rules.within_validity(live.valid_until, today):
                valid_from = live.valid_from
            else:
                valid_from = command.inspected_on or today
            return MarkPlan(
                valid_until,
                command.reason,
                now,
                valid_from,
                command.inspected_on,
                command.station_id,
                issued_by=command.issued_by,
                issuer_fingerprint=command.issuer_fingerprint,
            )

        def sign(serial: int, vehicle: VehicleRecord, terms: MarkTerms) -> tuple[str, int]:
            return self.signer.sign(self.body(serial, vehicle, terms, cert.Presentation.PRESENTATION_OFFLINE))

        digest = command.digest()
        mark, replayed, change_id, first_digest = self.store.issue(
            command.request_id, command.plate_type, command.plate_number, decide, sign, digest
        )
        if replayed and (mark.plate_type, mark.plate_number) != (command.plate_type, command.plate_number):
            raise InvalidArgument("request_id", f"{command.request_id!r} was already used for another vehicle")
        if replayed and first_digest and first_digest != digest:
            raise InvalidArgument(
                "request_id",
                f"{command.request_id!r} was already used for another request (its reason, inspection date, "
                "station or caller differ): give this request an id of its own",
            )
        return Issued(mark, replayed, change_id)

    @staticmethod
    def body(
        serial: int, vehicle: VehicleRecord, terms: MarkTerms, presentation: int, expires_at: int = 0
    ) -> cert.CertificateBody:
        return cert.CertificateBody(
            serial=serial,
            plate_number=vehicle.plate_number,
            plate_type=vehicle.plate_type,
            vin=vehicle.vin,
            valid_until=terms.valid_until,
            issued_at=int(terms.issued_at.timestamp()),
            reason=terms.reason,
            presentation=presentation,
            presentation_expires_at=expires_at,
            valid_from_day=(terms.valid_from - cert.EPOCH_DAY).days,
        )

    def present(self, plate_type: str, plate_number: str, lifetime: dt.timedelta) -> Presented:
        """A vehicle's current mark in all three presentations, signed with the active key (so a
        mark whose key was revoked is shown afresh once a new key is active). Signing is
        deterministic: the download copy equals the stored one while the key is unchanged.
        Refused for an unknown vehicle, a blocked one, a revoked mark, or no mark."""
        if self.vehicles is None:
            raise RuntimeError("this Issuer was built without a validity index: it cannot present marks")
        vehicle = self.vehicles.by_plate(plate_type, plate_number)
        if vehicle is None:
            raise NotFound(f"no vehicle {plate_number} (plate type {plate_type})")
        if vehicle.status_bits & BLOCKS_ROAD_MASK:
            raise RuleViolation(f"{plate_number}'s status forbids the road: no mark is shown", reason="VEHICLE_BLOCKED")
        if self.vehicles.is_revoked(vehicle.current_serial):
            raise RuleViolation(f"{plate_number}'s current mark is revoked", reason="MARK_REVOKED")
        mark = self.store.mark_by_serial(vehicle.current_serial) if vehicle.current_serial else None
        if mark is None:
            raise RuleViolation(f"{plate_number} has no mark yet", reason="NO_MARK")
        expires = self.clock() + lifetime

        def copy(presentation: int, expires_at: int = 0) -> str:
            return self.signer.sign(self.body(mark.serial, vehicle, mark, presentation, expires_at))[0]

        return Presented(
            mark=mark,
            live=copy(cert.Presentation.PRESENTATION_ONLINE, int(expires.timestamp())),
            live_expires=expires,
            download=copy(cert.Presentation.PRESENTATION_OFFLINE),
            printed=copy(cert.Presentation.PRESENTATION_PRINT),
        )


@dataclass(frozen=True)
class Presented:
    mark: MarkRecord
    live: str
    live_expires: dt.datetime
    download: str
    printed: str
