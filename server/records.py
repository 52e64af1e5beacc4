"""Plain records passed between the store, the index and the services (no SQLAlchemy here)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vimark.client.domain import Month, VehicleCategory
from vimark.server.rules import VehicleFacts


@dataclass(frozen=True)
class VehicleRecord:
    """A vehicle as the registry and vimark know it; exactly what the validity index holds."""

    vehicle_id: int
    plate_type: str
    plate_number: str
    vin: str
    category: VehicleCategory
    registered_on: dt.date
    seats: int  # 0 = unknown
    exemption_lost: bool
    status_bits: int
    valid_until: Month | None
    current_serial: int  # 0 = no mark yet

    def facts(self) -> VehicleFacts:
        """What the rules engine needs to know of this vehicle."""
        return VehicleFacts(
            category=self.category,
            registered_on=self.registered_on,
            seats=self.seats or None,
            exemption_lost=self.exemption_lost,
            status_bits=self.status_bits,
        )


@dataclass(frozen=True)
class MarkRecord:
    """One issued mark, as stored."""

    serial: int
    vehicle_id: int
    plate_type: str
    plate_number: str
    vin: str
    valid_until: Month
    reason: int  # IssueReason
    issued_at: dt.datetime
    valid_from: dt.date  # the first day this validity is attested (see CertificateBody.valid_from_day)
    key_id: int
    qr_text: str
    request_id: str
    revoked: bool
    issued_by: str = ""  # "role/caller_id" of the certificate that asked for it ("" before this was kept)
    issuer_fingerprint: str = ""  # hex SHA-256 of that certificate ("" in development mode, or before)
    station_id: str = ""


@dataclass(frozen=True)
class Change:
    """One change-log row: vehicle `vehicle.vehicle_id` now reads `vehicle`; `revoked_serial` if a revocation."""

    change_id: int
    vehicle: VehicleRecord
    revoked_serial: int | None


Column = Sequence[int] | np.ndarray[Any, Any]  # a VehicleColumns column of numbers
Texts = Sequence[bytes] | np.ndarray[Any, Any]  # UTF-8 values, or a fixed-width bytes array of them


@dataclass(frozen=True)
class VehicleColumns:
    """A chunk of vehicles as stored, one column per `VehicleRecord` field (same names, same
    order, same length), for loading the index without a Python object per vehicle: each a
    sequence or a numpy array. As stored, not as the record holds them: `plate_type` is the code
    as a number (2 for "02"), `plate_number` and `vin` are UTF-8 bytes, `category` is the
    `VehicleCategory` value, `registered_on` the date's ordinal (`date.toordinal()`),
    `exemption_lost` 0 or 1, `valid_until` 0 when there is none."""

    vehicle_id: Column
    plate_type: Column
    plate_number: Texts
    vin: Texts
    category: Sequence[str]
    registered_on: Column
    seats: Column
    exemption_lost: Column
    status_bits: Column
    valid_until: Column
    current_serial: Column


@dataclass(frozen=True)
class VehicleSnapshot:
    """Everything the index needs, as one consistent view of the store: the last change id it
    reflects, the highest vehicle id (0 if none; to size the index at once), every revoked serial,
    and every vehicle in chunks, read as they are consumed (so only inside the store's `with`)."""

    last_change_id: int
    max_vehicle_id: int
    revoked: set[int]
    chunks: Iterator[VehicleColumns]


@dataclass(frozen=True)
class MarkPlan:
    """What the rules decided for a new mark; the store assigns the serial."""

    valid_until: Month
    reason: int  # IssueReason
    issued_at: dt.datetime
    valid_from: dt.date
    inspected_on: dt.date | None = None
    station_id: str = ""
    issued_by: str = ""  # "role/caller_id" of the calling certificate
    issuer_fingerprint: str = ""  # hex SHA-256 of the calling certificate; "" in development mode


@dataclass(frozen=True)
class CopyPlan:
    """What the rules decided instead of a new mark: give the vehicle's current mark again (a
    re-download or a lost paper mark): no new mark, no change-log row; `resign` when its signing
    key is no longer the active one (the store then stores the new signature on that mark)."""

    resign: bool


@dataclass(frozen=True)
class AuditEvent:
    """One audited call (or one VerifyBatch item): who asked what about which plate, and the answer.

    `plate_number` is empty when the QR was not authentic (nothing trustworthy to name); `verdict`
    is a Verdict name for Verify/VerifyBatch or a lookup result (FOUND, NOT_FOUND) for
    LookupVehicleStatus; `serial` is 0 when no mark was identified."""

    at: dt.datetime  # timezone-aware (UTC)
    caller_id: str
    role: str  # Role value: police, partner, ...
    rpc: str
    plate_type: str
    plate_number: str
    verdict: str
    serial: int
    fingerprint: str = ""  # hex SHA-256 of the caller's certificate; "" in development mode
    # The audit row's id, filled on reads (0 for an event not yet written): the order events were
    # stored in, and a page cursor. Not part of an event's value: a written event equals its read.
    event_id: int = field(default=0, compare=False)
    # The hash chain through this event, filled on reads (store/audit_chain.py); like event_id,
    # the store's, not part of the event's value.
    chain: str = field(default="", compare=False)
