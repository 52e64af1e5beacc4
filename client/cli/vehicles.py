"""vimark vehicles import | set-status | revoke-mark: the registry feed from the command line."""

from __future__ import annotations

import argparse
import csv
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from vimark.client.cli.common import add_client_flags, connect, dump, emit
from vimark.client.cli.progress import Progress
from vimark.client.domain import parse_plate_number, parse_plate_type
from vimark.client.errors import InvalidArgument, VimarkError
from vimark.v1 import registry_service_pb2 as rpb

CSV_COLUMNS = ("plate_number", "plate_type", "vin", "category", "registered_on", "valid_until", "status")
OPTIONAL_COLUMNS = ("seats", "exemption_lost")  # absent or empty: unknown seats (0), exemption not lost
BATCH = 500  # vehicles per ImportVehicles batch: short write transactions (docs/operations.md, "Importing")
MAX_BATCH = 10_000  # ImportVehicles' documented maximum
WINDOW = 4  # batches sent and not yet acknowledged: the server always has the next one to parse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("vehicles", help="the registry feed: import vehicles, set status, revoke marks")
    sub = group.add_subparsers(dest="vehicles_command", required=True)

    p = sub.add_parser("import", help="create or update vehicles from a CSV file")
    p.add_argument(
        "file",
        type=Path,
        help=f"CSV with header {','.join(CSV_COLUMNS)}, optionally also {' and '.join(OPTIONAL_COLUMNS)}",
    )
    p.add_argument(
        "--batch-size",
        type=batch_size,
        help=f"vehicles per batch, each applied all or nothing (default {BATCH:,}; at most {MAX_BATCH:,})",
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


def batch_size(text: str) -> int:
    """argparse type: vehicles per ImportVehicles batch (1 to MAX_BATCH)."""
    value = int(text)
    if not 1 <= value <= MAX_BATCH:
        raise ValueError(text)
    return value


def serial_number(text: str) -> int:
    """argparse type: a mark serial (1 to 2^63-1), refused by argparse with a usage message otherwise."""
    value = int(text)
    if not 0 < value < 2**63:
        raise ValueError(text)
    return value


def read_csv(path: Path) -> list[tuple[int, rpb.Vehicle]]:
    """(line number, vehicle) for every data row; a wrong header, a bad plate, seats or
    exemption_lost cell or an unreadable file is refused before anything is sent."""
    try:
        return list(read_rows(path))
    except InvalidArgument as exc:
        raise InvalidArgument(exc.field, f"{exc.description} (nothing was imported)") from None


def read_rows(path: Path) -> Iterator[tuple[int, rpb.Vehicle]]:
    """(line number, vehicle) for each data row, read as they are consumed (a province's file is
    never held whole). A wrong header, a bad cell or an unreadable file raises InvalidArgument
    naming the file and line; what was imported before is the caller's to say."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            _check_header(path, header)
            at = [header.index(c) if c in header else -1 for c in (*CSV_COLUMNS, *OPTIONAL_COLUMNS)]
            for row in reader:
                if not row:
                    continue  # a blank line
                cells = [row[i].strip() if 0 <= i < len(row) else "" for i in at]  # a short row: empty cells
                try:
                    yield reader.line_num, _vehicle(*cells)
                except InvalidArgument as exc:
                    raise InvalidArgument(exc.field, f"{path} line {reader.line_num}: {exc.description}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgument("file", f"cannot read {path} as UTF-8 CSV: {exc}") from None


def _vehicle(
    plate_number: str,
    plate_type: str,
    vin: str,
    category: str,
    registered_on: str,
    valid_until: str,
    status: str,
    seats: str,
    exemption_lost: str,
) -> rpb.Vehicle:
    """One row's cells (CSV_COLUMNS then OPTIONAL_COLUMNS) as a Vehicle. The plate cells are read
    as every entry point reads them (京a·12345 -> 京A12345, 2 -> 02) and refused here, so a typo
    costs no call; the rest is the server's to check."""
    return rpb.Vehicle(
        plate_number=parse_plate_number(plate_number),
        plate_type=parse_plate_type(plate_type),
        vin=vin,
        category=category,
        registered_on=registered_on,
        valid_until=valid_until,
        status_codes=status or "A",
        seats=_seats(seats),
        exemption_lost=_yes_no(exemption_lost),
    )


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


def _seats(text: str) -> int:
    if not text:
        return 0  # unknown, as the registry says it
    if not re.fullmatch(r"[0-9]{1,9}", text):  # ASCII digits only; the server refuses more than 99
        raise InvalidArgument("seats", f"{text!r} is not a number of seats (a whole number, or empty)")
    return int(text)


_YES_NO = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}


def _yes_no(text: str) -> bool:
    try:
        return _YES_NO[text.lower()]
    except KeyError:
        raise InvalidArgument("exemption_lost", f"{text!r} is not true/false/yes/no/1/0 (or empty for false)") from None


# Registry field names as the CSV calls them.
_CSV_NAME = {"status_codes": "status"}


def import_csv(args: argparse.Namespace) -> int:
    """Stream the file to ImportVehicles in batches of BATCH rows, WINDOW of them in flight, each
    applied all or nothing. A refused row is named by its line, with what was imported before it
    (importing the whole file again is safe: vehicles are matched by VIN, then plate)."""
    path: Path = args.file
    size: int = args.batch_size or BATCH
    sent: deque[list[int]] = deque()  # each batch in flight: its rows' line numbers
    imported: list[int] = []  # first and last line of the rows acknowledged so far
    created = updated = 0

    def batches() -> Iterator[list[rpb.Vehicle]]:
        lines: list[int] = []
        batch: list[rpb.Vehicle] = []
        for line, vehicle in read_rows(path):
            lines.append(line)
            batch.append(vehicle)
            if len(batch) == size:
                sent.append(lines)
                yield batch
                lines, batch = [], []
        if batch:
            sent.append(lines)
            yield batch

    started = time.monotonic()
    progress = Progress(f"importing {path.name}", _data_lines(path), unit="vehicles")
    try:
        with connect(args) as client:
            for ack in client.import_vehicles(batches(), window=WINDOW):
                lines = sent.popleft()
                imported[:] = [imported[0] if imported else lines[0], lines[-1]]
                created += ack.created_count
                updated += ack.updated_count
                progress.advance(len(lines))
    except InvalidArgument as exc:
        if progress.interactive and progress.done:
            progress.stream.write("\n")  # end the bar's line before the error
        raise _located(path, exc, sent, imported, progress.done) from None
    except VimarkError:  # the server or the connection failed: say what is in before the error itself
        if imported:
            where = f"{path} lines {imported[0]}-{imported[1]} were imported; line {imported[1] + 1} onward were not"
            progress.stream.write(("\n" if progress.interactive else "") + f"vimark: {where}\n")
        raise
    progress.close()
    seconds = time.monotonic() - started
    rate = progress.done / seconds if seconds > 0 else 0.0
    summary = {"created_count": created, "updated_count": updated, "vehicles_per_second": round(rate)}
    print(
        dump(summary)
        if args.json
        else f"imported {progress.done} vehicles: {created} new, {updated} updated ({rate:,.0f} vehicles/s)"
    )
    return 0


def _located(
    path: Path, exc: InvalidArgument, sent: deque[list[int]], imported: list[int], rows: int
) -> InvalidArgument:
    """An import's error with what it left: the refused row's line, its batch, the lines imported."""
    done = (
        f"lines {imported[0]}-{imported[1]} were imported; line {imported[1] + 1} onward were not"
        if imported
        else "nothing was imported"
    )
    match = re.fullmatch(r"vehicles\[(\d+)\]\.(\w+)", exc.field)
    if match is None or not sent:  # refused while reading the file: that row's batch was never sent
        return InvalidArgument(exc.field, f"{exc.description} ({done})")
    lines = sent[0]  # the server stops at the first refused batch: the oldest one not acknowledged
    before = f", the {rows:,} rows before it were" if rows else ""
    return InvalidArgument(
        _CSV_NAME.get(match[2], match[2]),
        f"{path} line {lines[int(match[1])]}: {exc.message.split(': ', 1)[-1]};"
        f" the batch of lines {lines[0]}-{lines[-1]} was not applied{before} ({done})",
    )


def _data_lines(path: Path) -> int | None:
    """The file's data rows, for the progress bar (lines after the header: exact unless a quoted
    cell spans lines); None when the file cannot be read (read_rows then says why)."""
    try:
        with path.open("rb") as f:
            return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1)
    except OSError:
        return None


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
