"""vimark issue | verify | lookup | present | render."""

from __future__ import annotations

import argparse
from pathlib import Path

from vimark.client.cli import backfill
from vimark.client.cli.common import add_client_flags, connect, dump, emit
from vimark.client.domain import CHINA_TIME, STATUS_CODES, parse_plate_number, parse_plate_type
from vimark.client.errors import InvalidArgument
from vimark.client.messages import EN, language_of, say
from vimark.v1 import certificate_pb2
from vimark.v1 import mark_service_pb2 as pb

REASONS = ("registration", "transfer", "change", "inspection_passed", "exemption", "redownload", "paper_lost")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("issue", help="issue a mark for a vehicle (inspection stations, registration)")
    p.add_argument("--plate-number", required=True)
    p.add_argument("--plate-type", required=True, help="GA 24.7 code, e.g. 02")
    p.add_argument("--reason", required=True, choices=REASONS)
    p.add_argument("--request-id", required=True, help="idempotency key: repeating it returns the same mark")
    p.add_argument("--inspected-on", default="", metavar="YYYY-MM-DD", help="for inspection_passed")
    p.add_argument("--station", default="", help="inspection station code, for inspection_passed")
    p.add_argument("--vin", default="")
    add_client_flags(p)
    p.set_defaults(func=issue)

    p = commands.add_parser("verify", help="verify a scanned QR text or an image of one")
    p.add_argument("qr_text", nargs="?", help="the QR text as scanned")
    p.add_argument("--image", type=Path, help="a photo, PNG or PDF of the QR instead of its text")
    p.add_argument("--at", default="", metavar="YYYY-MM-DD", help="judge validity on this date (default today)")
    offline = p.add_mutually_exclusive_group()  # a police terminal's offline data (vimark terminal sync)
    offline.add_argument("--offline", type=Path, metavar="DIR", help="verify from DIR only, without the server")
    offline.add_argument(
        "--fallback-offline", type=Path, metavar="DIR", help="verify from DIR if the server does not answer in time"
    )
    add_client_flags(p)
    p.set_defaults(func=verify)

    p = commands.add_parser("lookup", help="a vehicle's inspection validity and status by plate or VIN")
    p.add_argument("--plate-number", default="")
    p.add_argument("--plate-type", default="")
    p.add_argument("--vin", default="")
    p.add_argument("--at", default="", metavar="YYYY-MM-DD")
    add_client_flags(p)
    p.set_defaults(func=lookup)

    p = commands.add_parser("present", help="the live QR of a vehicle's mark, plus download and print copies")
    p.add_argument("--plate-number", required=True)
    p.add_argument("--plate-type", required=True)
    add_client_flags(p)
    p.set_defaults(func=present)

    backfill.register(commands)  # vimark marks backfill

    p = commands.add_parser("render", help="draw a QR text as PNG or SVG, or a printable PDF")
    p.add_argument("qr_text")
    p.add_argument("--out", required=True, type=Path, help="output file: .png, .svg or .pdf")
    # For .pdf only: the server reads the plate and month from the sealed mark.
    add_client_flags(p)
    p.set_defaults(func=render)


def issue(args: argparse.Namespace) -> int:
    with connect(args) as client:
        r = client.issue(
            request_id=args.request_id,
            plate_number=args.plate_number,
            plate_type=args.plate_type,
            vin=args.vin,
            inspected_on=args.inspected_on,
            station_id=args.station,
            reason=certificate_pb2.IssueReason.Value("ISSUE_REASON_" + args.reason.upper()),
        )
    emit(
        args,
        r,
        f"issued mark {r.serial} for {r.plate_number} ({r.plate_type}), valid until {r.valid_until}"
        f"{' (replayed)' if r.replayed else ''}\n{r.qr_text}",
    )
    return 0


def verify(args: argparse.Namespace) -> int:
    if bool(args.qr_text) == bool(args.image):
        raise InvalidArgument("qr_text", "give the QR text or --image FILE (one of them)")
    if args.qr_text and Path(args.qr_text).is_file():
        raise InvalidArgument(
            "qr_text", f"{args.qr_text} is a file: to read the QR in a picture, use --image {args.qr_text}"
        )
    text = args.qr_text
    if args.image:
        from vimark.client.qrimage import decode_image

        text = decode_image(args.image)
    if args.offline or args.fallback_offline:
        from vimark.client.cli import terminal

        if args.at:
            raise InvalidArgument("at", "offline data judges today only")
        return terminal.verify_offline(args, text) if args.offline else terminal.verify_online_or_offline(args, text)
    with connect(args) as client:
        r = client.verify(text, at_date=args.at)
    emit(args, r, describe_verification(r, language_of(args.lang)))
    return 0 if r.verdict == pb.VERDICT_VALID else 1


def describe_verification(r: pb.VerifyResponse, language: str = EN) -> str:
    lines = [f"{pb.Verdict.Name(r.verdict).removeprefix('VERDICT_')}: {r.explanation}"]
    if r.plate_number:
        lines.append(
            f"  {r.plate_number} ({r.plate_type})  {say('cli.valid_until', language, month=r.valid_until)}"
            + (f"  {say('cli.mark', language, serial=r.serial)}" if r.serial else "")
        )
    if r.presentation:
        how = certificate_pb2.Presentation.Name(r.presentation).removeprefix("PRESENTATION_")
        lines.append(f"  {say('cli.presented', language, how=how)}")
    lines += standing_lines(r, language)
    return "\n".join(lines)


def standing_lines(r: pb.VerifyResponse | pb.LookupVehicleStatusResponse, language: str = EN) -> list[str]:
    """Status letters, overdue cycles and alerts: what police see in both Verify and Lookup."""
    names = {c: f"{STATUS_CODES[c].name_zh} {STATUS_CODES[c].name_en}" for c in r.status_codes}
    lines = [f"  {say('cli.status', language, code=c, name=names[c])}" for c in r.status_codes]
    if r.overdue_cycles:
        scrapping = f" - {say('cli.scrapping_due', language)}" if r.scrapping_due else ""
        lines.append(f"  {say('cli.overdue_cycles', language, cycles=r.overdue_cycles)}{scrapping}")
    if r.police_alert:
        lines.append(f"  {say('cli.police_alert', language)}")
    return lines


def lookup(args: argparse.Namespace) -> int:
    if not (args.plate_number or args.plate_type or args.vin):
        raise InvalidArgument("plate_number", "give --plate-number and --plate-type, or --vin")
    plate = {}
    if args.plate_number or args.plate_type:  # checked here, so a typo costs no call
        plate = {"plate_number": parse_plate_number(args.plate_number), "plate_type": parse_plate_type(args.plate_type)}
    with connect(args) as client:
        r = client.lookup(vin=args.vin, at_date=args.at, **plate)
    language = language_of(args.lang)
    validity = say("cli.within_validity" if r.within_validity else "cli.not_within_validity", language)
    named = f"{r.plate_number} ({r.plate_type})" if r.plate_number else f"VIN {args.vin}"
    current = r.current_serial or say("cli.no_mark", language)
    lines = [
        f"{named}: {validity}, {say('cli.valid_until', language, month=r.valid_until)}",
        f"  {say('cli.current_mark', language, serial=current)}",
    ]
    lines += standing_lines(r, language)
    if r.blocked:
        lines.append(f"  {say('cli.blocked', language)}")
    emit(args, r, "\n".join(lines))
    return 0


def present(args: argparse.Namespace) -> int:
    with connect(args) as client:
        r = client.present(plate_number=args.plate_number, plate_type=args.plate_type)
    expires = r.live_expire_time.ToDatetime(CHINA_TIME).strftime("%Y-%m-%d %H:%M:%S China Standard Time (UTC+8)")
    emit(
        args,
        r,
        f"live QR (void after {expires}):\n{r.live_qr_text}\ndownload copy:\n{r.download_qr_text}\n"
        f"print copy:\n{r.print_qr_text}",
    )
    return 0


def render(args: argparse.Namespace) -> int:
    from vimark.client.render import render as draw

    fields: dict[str, str | int] = {}
    if args.out.suffix.lower() == ".pdf":
        # The page shows the plate and month; the sealed QR hides them, so ask the server (a
        # description, not a verification: no scan happened, so nothing is audited).
        with connect(args) as client:
            r = client.describe_mark(args.qr_text)
        fields = {
            "plate_number": r.plate_number,
            "plate_type": r.plate_type,
            "valid_until": r.valid_until,
            "serial": r.serial,
        }
    draw(args.qr_text, args.out, **fields)  # type: ignore[arg-type]
    print(dump({"out": str(args.out)}) if args.json else f"wrote {args.out}")
    return 0
