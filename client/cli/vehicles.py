"""vimark vehicles import | set-status | revoke-mark: the registry feed from the command line."""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from vimark.client.cli.common import add_client_flags, connect, dump, emit
from vimark.client.domain import parse_plate_number, parse_plate_type
from vimark.client.errors import InvalidArgument
from vimark.v1 import registry_service_pb2 as rpb

CSV_COLUMNS = ("plate_number", "plate_type", "vin", "category", "registered_on", "valid_until", "status")
OPTIONAL_COLUMNS = ("seats", "exemption_lost")  # absent or empty: unknown seats (0), exemption not lost
BATCH = 1000  # UpsertVehicles' documented maximum


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("vehicles", help="the registry feed: import vehicles, set status, revoke marks")
    sub = group.add_subparsers(dest="vehicles_command", required=True)

    p = sub.add_parser("import", help="create or update vehicles from a CSV file")
    p.add_argument(
        "file",
        type=Path,
        help=f"CSV with header {','.join(CSV_COLUMNS)}, optionally also {' and '.join(OPTIONAL_COLUMNS)}",
    )
    add_client_flags(p)
    p.set_defaults(func=import_csv)

    p = sub.add_parser("set-status", help="replace a vehicle's status letters (A clears)")
    p.add_argument("--plate-number", required=True)
    p.add_argument("--plate-type", required=True)
    p.add_argument("--status", required=True, help="letters, e.g. C (stolen) or A (normal)")
    add_client_flags(p)
    p.set_defaults(func=set_status)

    p = sub.add_parser("revoke-mark", help="revoke one mark by serial")
    p.add_argument("--serial", required=True, type=serial_number)
    p.add_argument("--reason", default="")
    add_client_flags(p)
    p.set_defaults(func=revoke_mark)


def serial_number(text: str) -> int:
    """argparse type: a mark serial (1 to 2^63-1), refused by argparse with a usage message otherwise."""
    value = int(text)
    if not 0 < value < 2**63:
        raise ValueError(text)
    return value


def read_csv(path: Path) -> list[tuple[int, rpb.Vehicle]]:
    """(line number, vehicle) for every data row; a wrong header, a bad seats or exemption_lost
    cell or an unreadable file is refused before anything is sent."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            _check_header(path, reader.fieldnames or [])
            rows = []
            for row in reader:
                cell = {c: (row.get(c) or "").strip() for c in (*CSV_COLUMNS, *OPTIONAL_COLUMNS)}  # short row: None
                where = f"{path} line {reader.line_num}"
                vehicle = rpb.Vehicle(
                    plate_number=_plate_cell(parse_plate_number, cell["plate_number"], where),
                    plate_type=_plate_cell(parse_plate_type, cell["plate_type"], where),
                    vin=cell["vin"],
                    category=cell["category"],
                    registered_on=cell["registered_on"],
                    valid_until=cell["valid_until"],
                    status_codes=cell["status"] or "A",
                    seats=_seats(cell["seats"], where),
                    exemption_lost=_yes_no(cell["exemption_lost"], where),
                )
                rows.append((reader.line_num, vehicle))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgument("file", f"cannot read {path} as UTF-8 CSV: {exc}") from None


def _check_header(path: Path, header: Sequence[str]) -> None:
    """A missing, unknown or repeated column is refused: each would silently import wrong values."""
    known = ", ".join((*CSV_COLUMNS, *(f"{c} (optional)" for c in OPTIONAL_COLUMNS)))
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise InvalidArgument("file", f"{path}: header lacks {', '.join(missing)} (columns: {known})")
    unknown = [c for c in header if c not in CSV_COLUMNS and c not in OPTIONAL_COLUMNS]
    if unknown:
        raise InvalidArgument(
            "file", f"{path}: header has unknown columns {', '.join(map(repr, unknown))} (columns: {known})"
        )
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InvalidArgument("file", f"{path}: header repeats {', '.join(repeated)}")


def _plate_cell(parse: Callable[[str], str], text: str, where: str) -> str:
    """A plate number or type cell in its canonical form, read as every entry point reads it
    (京a·12345 -> 京A12345, 2 -> 02); refused here, so a bad plate anywhere sends nothing."""
    try:
        return parse(text)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.field, f"{where}: {exc.description} (nothing was imported)") from None


def _seats(text: str, where: str) -> int:
    if not text:
        return 0  # unknown, as the registry says it
    if not re.fullmatch(r"[0-9]{1,9}", text):  # ASCII digits only; the server refuses more than 99
        raise InvalidArgument("seats", f"{where}: {text!r} is not a number of seats (a whole number, or empty)")
    return int(text)


_YES_NO = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}


def _yes_no(text: str, where: str) -> bool:
    try:
        return _YES_NO[text.lower()]
    except KeyError:
        raise InvalidArgument(
            "exemption_lost", f"{where}: {text!r} is not true/false/yes/no/1/0 (or empty for false)"
        ) from None


# Registry field names as the CSV calls them.
_CSV_NAME = {"status_codes": "status"}


def import_csv(args: argparse.Namespace) -> int:
    rows = read_csv(args.file)
    created = updated = 0
    with connect(args) as client:
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            try:
                r = client.upsert_vehicles([v for _, v in chunk])
            except InvalidArgument as exc:
                # vehicles[i].field -> the CSV line. The server applies a batch all or nothing, so
                # only the earlier batches are in (importing the whole file again is safe).
                match = re.match(r"vehicles\[(\d+)\]\.(\w+)", exc.field)
                if match is None:
                    raise
                line = chunk[int(match[1])][0]
                done = (
                    f"lines {rows[0][0]}-{rows[start - 1][0]} were imported; line {chunk[0][0]} onward were not"
                    if start
                    else "nothing was imported"
                )
                raise InvalidArgument(
                    _CSV_NAME.get(match[2], match[2]),
                    f"{args.file} line {line}: {exc.message.split(': ', 1)[-1]} ({done})",
                ) from None
            created += r.created_count
            updated += r.updated_count
    summary = {"created_count": created, "updated_count": updated}
    print(dump(summary) if args.json else f"imported {len(rows)} vehicles: {created} new, {updated} updated")
    return 0


def set_status(args: argparse.Namespace) -> int:
    plate_number, plate_type = parse_plate_number(args.plate_number), parse_plate_type(args.plate_type)
    with connect(args) as client:
        r = client.set_status(plate_number=plate_number, plate_type=plate_type, status_codes=args.status)
    emit(args, r, f"{plate_number} ({plate_type}) status now {r.status_codes}")
    return 0


def revoke_mark(args: argparse.Namespace) -> int:
    with connect(args) as client:
        r = client.revoke_mark(args.serial, args.reason)
    emit(args, r, f"mark {r.serial} revoked")
    return 0
