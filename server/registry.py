"""The registry feed's rows, checked before the store sees them: form (plate, VIN, category,
dates, seats) and dates that are possible today."""

from __future__ import annotations

import datetime as dt

from vimark.client.domain import (
    VehicleCategory,
    format_month,
    month_of,
    parse_date,
    parse_month,
    parse_plate_number,
    parse_plate_type,
    parse_vin,
    status_bits,
)
from vimark.client.errors import InvalidArgument
from vimark.server import rules
from vimark.server.records import VehicleRecord
from vimark.v1 import registry_service_pb2 as rpb

MAX_SEATS = 99


def parse_vehicle(v: rpb.Vehicle, field: str = "vehicle") -> VehicleRecord:
    """A registry Vehicle message, checked; errors name the field (e.g. vehicles[3].vin)."""
    try:
        return VehicleRecord(
            vehicle_id=0,
            plate_type=parse_plate_type(v.plate_type),
            plate_number=parse_plate_number(v.plate_number),
            vin=parse_vin(v.vin),
            category=VehicleCategory.parse(v.category),
            registered_on=parse_date(v.registered_on, "registered_on"),
            seats=_seats(v.seats),
            exemption_lost=v.exemption_lost,
            status_bits=status_bits(v.status_codes or "A"),
            valid_until=parse_month(v.valid_until) if v.valid_until else None,
            current_serial=0,
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}.{exc.field}", exc.description) from None


def _seats(seats: int) -> int:
    if seats > MAX_SEATS:
        raise InvalidArgument("seats", f"{seats} seats is not a motor vehicle vimark marks (at most {MAX_SEATS})")
    return seats


def check_registry_dates(v: VehicleRecord, today: dt.date, config: rules.RuleConfig, field: str) -> None:
    """A registry row's dates must be possible today: registered by now, valid from its
    registration on and not beyond what any inspection granted today could reach. A wrong row
    would otherwise become a signed mark (a redownload carries the registry's validity)."""
    if v.registered_on > today:
        raise InvalidArgument(f"{field}.registered_on", f"{v.registered_on} is after today ({today})")
    if v.registered_on.year < 1900:  # the index keeps days since 1900 (server/index.py)
        raise InvalidArgument(f"{field}.registered_on", f"{v.registered_on} is before 1900")
    if v.valid_until is None:
        return
    if v.valid_until < month_of(v.registered_on):
        raise InvalidArgument(
            f"{field}.valid_until", f"{format_month(v.valid_until)} is before the registration ({v.registered_on})"
        )
    latest = rules.latest_recordable_validity(today, config)
    if v.valid_until > latest:
        raise InvalidArgument(
            f"{field}.valid_until",
            f"{format_month(v.valid_until)} is beyond any validity granted by today (at most {format_month(latest)})",
        )


def parse_status_letters(letters: str) -> int:
    """A SetVehicleStatus request's letters as status bits: the full set, never Q (it is derived)."""
    if not letters:
        raise InvalidArgument("status_codes", "required: the full set of letters, or A to clear")
    if "Q" in letters:
        raise InvalidArgument("status_codes", "Q (overdue) is derived from the valid-until month, not set")
    return status_bits(letters)
