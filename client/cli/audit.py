"""vimark audit: read the audit log (who verified or looked up which plate, when, the answer).

An operator's command: it asks the server's AuditService over TLS with an operator certificate,
page by page, and never touches the database.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from vimark.client.cli.common import add_client_flags, connect, dump
from vimark.v1 import audit_service_pb2 as apb

PAGE = 500  # events asked for per call


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "audit", help="read the audit log of verifications and lookups (police, partners); operators only"
    )
    p.add_argument("--plate-number", metavar="PLATE", help="only events about this plate number")
    p.add_argument("--caller", metavar="ID", help="only events of this caller (terminal or partner id)")
    p.add_argument(
        "--since",
        type=point_in_time,
        metavar="WHEN",
        help="only events at or after this date (2026-11-25) or ISO 8601 time (2026-11-25T10:00+08:00);"
        " without a zone, local time",
    )
    p.add_argument("--until", type=point_in_time, metavar="WHEN", help="only events before this date or time")
    p.add_argument("--limit", type=positive_int, default=1000, metavar="N", help="at most N events (default 1000)")
    add_client_flags(p)
    p.set_defaults(func=show)


def point_in_time(text: str) -> dt.datetime:
    """argparse type: a date or an ISO 8601 date-time; without a zone it is local time."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-11-25) or an ISO 8601 time (2026-11-25T10:00:00+08:00)"
        ) from None
    return value if value.tzinfo is not None else value.astimezone()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def as_json(event: apb.AuditEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "at": event.event_time.ToDatetime(dt.UTC).isoformat(),
        "caller_id": event.caller_id,
        "role": event.role,
        "rpc": event.rpc,
        "plate_type": event.plate_type,
        "plate_number": event.plate_number,
        "verdict": event.verdict,
        "serial": event.serial,
    }


def as_line(event: apb.AuditEvent) -> str:
    when = event.event_time.ToDatetime(dt.UTC).astimezone().isoformat(sep=" ", timespec="milliseconds")
    plate = f"{event.plate_number} ({event.plate_type})" if event.plate_number else "-"
    serial = f"serial {event.serial}" if event.serial else ""
    return f"{when}  {event.role:<8} {event.caller_id:<20} {event.rpc:<20} {plate:<16} {event.verdict:<26} {serial}"


def show(args: argparse.Namespace) -> int:
    shown = 0
    with connect(args) as client:
        events = client.audit_events(
            page_size=min(PAGE, args.limit),
            plate_number=args.plate_number or "",
            caller_id=args.caller or "",
            start_time=args.since,
            end_time=args.until,
        )
        for event in events:
            print(dump(as_json(event)) if args.json else as_line(event))
            shown += 1
            if shown >= args.limit:
                break
    return 0
