"""vimark marks backfill: bulk first issuance, for operators (the server's BackfillMarks)."""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

from vimark.client.cli.common import add_client_flags, connect, dump
from vimark.client.cli.progress import Progress
from vimark.client.domain import parse_plate_number, parse_plate_type
from vimark.client.errors import InvalidArgument
from vimark.v1 import mark_service_pb2 as pb

PLATES_PER_CALL = 50_000  # BackfillMarksRequest.plates' documented maximum
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C
# What the summary calls each outcome (BackfillOutcome), refusals last.
_SAID: dict[int, str] = {
    pb.BACKFILL_OUTCOME_ISSUED: "issued",
    pb.BACKFILL_OUTCOME_ALREADY_MARKED: "already had a mark",
    pb.BACKFILL_OUTCOME_CHANGED: "changed while being issued (run again)",
    pb.BACKFILL_OUTCOME_STATUS_FORBIDS_ISSUE: "refused: status forbids a new mark",
    pb.BACKFILL_OUTCOME_OUT_OF_VALIDITY: "refused: recorded validity has ended",
    pb.BACKFILL_OUTCOME_NO_RECORDED_VALIDITY: "refused: no recorded validity",
    pb.BACKFILL_OUTCOME_UNKNOWN_PLATE: "refused: no such plate",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("marks", help="marks in bulk (operators)")
    sub = group.add_subparsers(dest="marks_command", required=True)
    p = sub.add_parser(
        "backfill",
        help="issue a first mark for every vehicle within its recorded validity that has none",
        description="Safe to stop (Ctrl-C) and to run again: vehicles that have a mark are skipped.",
    )
    p.add_argument(
        "--plates",
        type=Path,
        metavar="FILE",
        help="only these vehicles: a CSV file with columns plate_number and plate_type (others are ignored, "
        "so a registry import file will do)",
    )
    p.add_argument(
        "--batch-size", type=int, default=0, metavar="N", help="marks per transaction (default: the server's)"
    )
    add_client_flags(p)
    p.set_defaults(func=backfill)


def read_plates(path: Path) -> list[tuple[str, str]]:
    """(plate type, plate number) of every row, canonical; a bad row is named by its line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = csv.DictReader(f)
            missing = {"plate_number", "plate_type"} - set(rows.fieldnames or ())
            if missing:
                raise InvalidArgument("plates", f"{path} has no column {' or '.join(sorted(missing))}")
            plates = []
            for row in rows:
                try:
                    plates.append(
                        (parse_plate_type(row["plate_type"] or ""), parse_plate_number(row["plate_number"] or ""))
                    )
                except InvalidArgument as exc:
                    raise InvalidArgument("plates", f"{path} line {rows.line_num}: {exc.message}") from None
            return plates
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgument("plates", f"cannot read {path}: {exc}") from None


def backfill(args: argparse.Namespace) -> int:
    plates = read_plates(args.plates) if args.plates else None
    # Every vehicle in one call; a list of plates in calls of at most PLATES_PER_CALL.
    calls = (
        [[]] if plates is None else [plates[i : i + PLATES_PER_CALL] for i in range(0, len(plates), PLATES_PER_CALL)]
    )
    totals: Counter[int] = Counter()
    progress: Progress | None = None
    try:
        with connect(args) as client:
            for part in calls:
                before = totals.copy()
                for message in client.backfill_marks(part, batch_size=args.batch_size):
                    if progress is None:
                        total = len(plates) if plates is not None else message.total
                        progress = Progress("backfill", total, unit="vehicles")
                    now = before + Counter({c.outcome: c.count for c in message.counts})
                    progress.advance(sum(now.values()) - sum(totals.values()))
                    totals = now
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        print(
            f"stopped: {totals[pb.BACKFILL_OUTCOME_ISSUED]:,} marks issued so far are kept. "
            "Run the same command again to continue: vehicles that have a mark are skipped.",
            file=sys.stderr,
        )
        return INTERRUPTED
    if progress is not None:
        progress.close()
    if args.json:
        print(
            dump({pb.BackfillOutcome.Name(o).removeprefix("BACKFILL_OUTCOME_").lower(): n for o, n in totals.items()})
        )
    else:
        print(summary(totals))
    return 0


def summary(totals: Counter[int]) -> str:
    refused = sum(n for o, n in totals.items() if _SAID[o].startswith("refused"))
    lines = [
        f"issued {totals[pb.BACKFILL_OUTCOME_ISSUED]:,} marks; {totals[pb.BACKFILL_OUTCOME_ALREADY_MARKED]:,} vehicles "
        f"already had one; {refused:,} refused"
    ]
    lines += [f"  {_SAID[o]}: {n:,}" for o, n in sorted(totals.items()) if n and o != pb.BACKFILL_OUTCOME_ISSUED]
    return "\n".join(lines)
