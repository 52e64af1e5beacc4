"""vimark audit [check | archive]: the audit log (who verified, looked up, issued or presented
which plate, when, and the answer).

Operators' commands: they ask the server's AuditService over TLS with an operator certificate,
page by page, and never touch the database. `check` recomputes the log's hash chain; `archive`
writes events older than the retention to a file, then has the server delete exactly those.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from vimark.client.cli.common import add_client_flags, connect, dump, emit
from vimark.client.domain import CHINA_TIME
from vimark.client.errors import InvalidArgument
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
    sub = p.add_subparsers(dest="audit_command", metavar="{check,archive}")
    check = sub.add_parser("check", help="recompute the audit log's hash chain: exit 1 if an event was altered")
    add_client_flags(check)
    check.set_defaults(func=check_chain)
    archive = sub.add_parser(
        "archive", help="write events before a date (6 months ago at the latest) to a file, then delete them"
    )
    archive.add_argument("--before", type=point_in_time, required=True, metavar="WHEN", help="a date or ISO time")
    archive.add_argument("--out", type=Path, required=True, metavar="FILE", help="JSON lines; must not exist yet")
    add_client_flags(archive)
    archive.set_defaults(func=archive_events)


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
        "certificate_fingerprint": event.certificate_fingerprint,
        "chain_hash": event.chain_hash,
    }


def as_line(event: apb.AuditEvent) -> str:
    when = event.event_time.ToDatetime(dt.UTC).astimezone(CHINA_TIME).isoformat(sep=" ", timespec="milliseconds")
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


def check_chain(args: argparse.Namespace) -> int:
    with connect(args) as client:
        r = client.verify_audit_chain()
    if r.intact:
        human = f"audit log intact: {r.checked_count} events, head {r.head_hash}"
    else:
        human = f"audit log ALTERED from event {r.first_broken_event_id} on ({r.checked_count} events checked)"
    emit(args, r, human)
    return 0 if r.intact else 1


def archive_events(args: argparse.Namespace) -> int:
    """Every event before --before into --out (written and flushed to disk first), then the server
    deletes those, up to the last one written: an interrupted archive loses nothing."""
    if args.out.exists():
        raise InvalidArgument("--out", f"{args.out} exists: archive into a new file")
    last, count = 0, 0
    with connect(args) as client:
        with args.out.open("x", encoding="utf-8") as out:
            for event in client.audit_events(page_size=PAGE, end_time=args.before):
                out.write(dump(as_json(event)) + "\n")
                last, count = event.event_id, count + 1
            out.flush()
            os.fsync(out.fileno())
        deleted = client.prune_audit_events(before_time=args.before, last_event_id=last).deleted_count if last else 0
    print(f"archived {count} events to {args.out}; {deleted} deleted from the log")
    return 0
