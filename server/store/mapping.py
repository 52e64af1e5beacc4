"""Rows ↔ records: one mapper per record type, used by every read, whichever path read the row.

A row read with `schema.VEHICLE_READ` (`MARK_READ`, `AUDIT_READ`) holds the record's fields in
the record's order, so each mapper builds its record by position. `day` turns a stored date into
a date: SQLAlchemy rows hold dates already (the default); driver rows pass `Driver.day_in`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vimark.client.domain import VehicleCategory
from vimark.server.records import AuditEvent, MarkRecord, VehicleRecord
from vimark.server.store import audit_chain, schema

Day = Callable[[Any], dt.date]


def _as_stored(value: Any) -> dt.date:
    return value  # type: ignore[no-any-return]


def vehicle(r: Sequence[Any], day: Day = _as_stored) -> VehicleRecord:
    """A vehicle from a row that starts with the `schema.VEHICLE_READ` columns."""
    return VehicleRecord(
        vehicle_id=r[0],
        plate_type=r[1],
        plate_number=r[2],
        vin=r[3],
        category=VehicleCategory(r[4]),
        registered_on=day(r[5]),
        seats=r[6],
        exemption_lost=bool(r[7]),
        status_bits=r[8],
        valid_until=r[9],
        current_serial=r[10],
    )


def mark(r: Sequence[Any], day: Day = _as_stored) -> MarkRecord:
    """A mark from a row of the `schema.MARK_READ` columns."""
    return MarkRecord(
        serial=r[0],
        vehicle_id=r[1],
        plate_type=r[2],
        plate_number=r[3],
        vin=r[4],
        valid_until=r[5],
        reason=r[6],
        issued_at=dt.datetime.fromtimestamp(r[7], dt.UTC),
        valid_from=day(r[8]),
        key_id=r[9],
        qr_text=r[10],
        request_id=r[11],
        revoked=bool(r[12]),
        issued_by=r[13],
        issuer_fingerprint=r[14],
        station_id=r[15],
    )


def audit_event(r: Sequence[Any]) -> AuditEvent:
    """An audit event from a row of the `schema.AUDIT_READ` columns."""
    return AuditEvent(
        at=dt.datetime.fromtimestamp(r[0], dt.UTC),
        caller_id=r[1],
        role=r[2],
        rpc=r[3],
        plate_type=r[4],
        plate_number=r[5],
        verdict=r[6],
        serial=r[7],
        fingerprint=r[8],
        event_id=r[9],
        chain=r[10],
    )


VEHICLE_WIDTH = len(schema.VEHICLE_READ)  # a row's columns after its vehicle's start here


def row(columns: Sequence[str], values: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row to insert into `columns` (as schema.py names them for a statement), from its values by name."""
    return tuple(values[name] for name in columns)


def audit_contents(events: Iterable[AuditEvent]) -> list[tuple[Any, ...]]:
    """Each audit event's values as they are stored and hashed (`schema.AUDIT_CONTENT`, the
    arguments of `audit_chain.link` after `prev`): texts without NULs or the chain's separator, cut
    to their columns; a serial that is not one of ours 0. A batch's events share most of their
    texts (one caller, a few verdicts): those are cleaned once per batch."""
    widths = schema.AUDIT_TEXT_WIDTHS
    plate_width = widths["plate_number"]
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    contents = []
    for e in events:
        key = (e.caller_id, e.role, e.rpc, e.plate_type, e.verdict, e.fingerprint)
        texts = shared.get(key)
        if texts is None:
            texts = shared[key] = tuple(
                _text(value, widths[name]) for name, value in zip(_SHARED_TEXTS, key, strict=True)
            )
        caller_id, role, rpc, plate_type, verdict, fingerprint = texts
        serial = e.serial if 0 <= e.serial < 2**63 else 0
        contents.append(
            (
                e.at.timestamp(),
                caller_id,
                role,
                rpc,
                plate_type,
                _text(e.plate_number, plate_width),
                verdict,
                serial,
                fingerprint,
            )
        )
    return contents


_SHARED_TEXTS = ("caller_id", "role", "rpc", "plate_type", "verdict", "fingerprint")


def _text(value: str, width: int) -> str:
    return value.replace("\x00", "").replace(audit_chain.SEPARATOR, "")[:width]
