"""vimark audit: read the audit log (who verified or looked up which plate, when, the answer).

Reads the database directly (an operator's tool on the server side), without migrating it.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vimark.client.cli.common import dump
from vimark.client.errors import InvalidArgument

if TYPE_CHECKING:
    from vimark.server.records import AuditEvent


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("audit", help="read the audit log of verifications and lookups (police, partners)")
    p.add_argument(
        "--db", required=True, metavar="URL", help="the server's database: sqlite:///FILE or postgresql+psycopg://..."
    )
    p.add_argument("--plate-number", metavar="PLATE", help="only events about this plate number")
    p.add_argument("--caller", metavar="ID", help="only events of this caller (terminal or partner id)")
    p.add_argument(
        "--since",
        type=since_time,
        metavar="WHEN",
        help="only events at or after this date (2026-11-25) or ISO 8601 time (2026-11-25T10:00+08:00);"
        " without a zone, local time",
    )
    p.add_argument("--limit", type=positive_int, default=1000, metavar="N", help="at most N events (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object per event, one per line")
    p.set_defaults(func=show)


def since_time(text: str) -> dt.datetime:
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


def as_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at.isoformat(),
        "caller_id": event.caller_id,
        "role": event.role,
        "rpc": event.rpc,
        "plate_type": event.plate_type,
        "plate_number": event.plate_number,
        "verdict": event.verdict,
        "serial": event.serial,
    }


def as_line(event: AuditEvent) -> str:
    when = event.at.astimezone().isoformat(sep=" ", timespec="milliseconds")
    plate = f"{event.plate_number} ({event.plate_type})" if event.plate_number else "-"
    serial = f"serial {event.serial}" if event.serial else ""
    return f"{when}  {event.role:<8} {event.caller_id:<20} {event.rpc:<20} {plate:<16} {event.verdict:<26} {serial}"


def show(args: argparse.Namespace) -> int:
    from vimark.server.store import Store  # the server side; only this command needs it

    url: str = args.db
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        if not path.is_file():  # SQLite would create an empty database; say what is wrong instead
            raise InvalidArgument("db", f"no database file {path}")
    store = Store(url, migrate=False)
    try:
        events = store.audit_events(
            plate_number=args.plate_number, caller_id=args.caller, since=args.since, limit=args.limit
        )
    finally:
        store.close()
    for event in events:
        print(dump(as_json(event)) if args.json else as_line(event))
    return 0
