"""vimark terminal sync DIR; vimark terminal lookup DIR --plate-type T --plate-number N;
vimark verify --offline DIR | --fallback-offline DIR.

A police terminal keeps its offline data in DIR (client/offline/directory.py): `sync` fetches the
signed trust bundle and the status snapshot (a delta when it holds one the server still knows).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vimark.client.cli.common import add_client_flags, connect, dump
from vimark.client.errors import Unavailable
from vimark.client.messages import language_of
from vimark.client.offline import DeltaDoesNotApply, OfflineVerification, OfflineVerifier, TerminalDirectory
from vimark.client.offline.directory import ANCHOR_FILE
from vimark.client.sdk import to_json_dict
from vimark.v1 import mark_service_pb2 as pb


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    terminal = commands.add_parser("terminal", help="a police terminal's offline data")
    sub = terminal.add_subparsers(dest="terminal_command", required=True)
    p = sub.add_parser("sync", help="download or update the signed trust bundle and status snapshot")
    p.add_argument("dir", type=Path, help="the terminal's offline data directory")
    p.add_argument(
        "--anchor", type=Path, metavar="FILE", help=f"the trust anchor file (first sync: kept as {ANCHOR_FILE})"
    )
    p.add_argument("--full", action="store_true", help="download the full snapshot even if a delta would do")
    add_client_flags(p)
    p.set_defaults(func=sync)
    p = sub.add_parser("lookup", help="check a plate typed by hand against the offline hotlist (no network)")
    p.add_argument("dir", type=Path, help="the terminal's offline data directory")
    p.add_argument("--plate-type", required=True, help="the plate type code, e.g. 02")
    p.add_argument("--plate-number", required=True, help="the plate number, e.g. 闽C12345")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=lookup)


def _size(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1000:.1f} kB" if n < 10_000_000 else f"{n / 1e6:.2f} MB"


def sync(args: argparse.Namespace) -> int:
    directory = TerminalDirectory(args.dir)
    if args.anchor is not None:
        directory.provision(args.anchor)
    directory.anchors()  # refuse to download anything a terminal could not check
    held = None if args.full else directory.held_status()
    with connect(args) as client:
        bundle_bytes = client.trust_bundle()
        bundle = directory.store_bundle(bundle_bytes)
        print(
            f"trust bundle: {len(bundle.trust.keys)} issuing keys, made {bundle.made_at:%Y-%m-%d %H:%M} UTC, "
            f"{_size(len(bundle_bytes))}"
        )
        if held is not None:
            answer = client.status_delta(held.change_id, held.digest())
            if answer.signed_delta:
                try:
                    state = directory.apply_delta(answer.signed_delta)
                    print(
                        f"status delta: version {held.change_id} -> {state.change_id}, "
                        f"{_size(len(answer.signed_delta))}"
                    )
                    return 0
                except DeltaDoesNotApply as exc:
                    print(f"status delta refused ({exc.message}); downloading the full snapshot")
        snapshot = client.status_snapshot()
        state = directory.store_snapshot(snapshot)
        print(
            f"status snapshot: version {state.change_id}, {state.serial_count} serials, "
            f"{len(state.hotlist)} on the hotlist, {_size(len(snapshot))}"
        )
    return 0


def lookup(args: argparse.Namespace) -> int:
    """Exit 1 when the plate's status forbids the road (stolen, seized...), else 0."""
    check = OfflineVerifier.open(args.dir).lookup_plate(args.plate_type.strip(), args.plate_number.strip().upper())
    if args.json:
        data = {
            "plate_type": check.plate_type,
            "plate_number": check.plate_number,
            "on_hotlist": check.on_hotlist,
            "status_codes": check.status_codes,
            "blocked": check.blocked,
            "police_alert": check.police_alert,
            "status_made_at": check.status_made_at.isoformat(),
            "stale_since": check.stale_since.isoformat() if check.stale_since else None,
        }
        print(dump(data))
    else:
        plate = f"{check.plate_type} {check.plate_number}"
        if check.blocked:
            line = f"{plate}: VEHICLE BLOCKED (status {check.status_codes})"
        elif check.on_hotlist:
            alert = ", POLICE ALERT" if check.police_alert else ""
            line = f"{plate}: on the hotlist, status {check.status_codes}{alert}"
        else:
            line = f"{plate}: not on the hotlist (neither blocked nor flagged when the status data was made)"
        lines = [f"OFFLINE {line}", f"  status data made {check.status_made_at:%Y-%m-%d %H:%M} UTC"]
        if check.stale_since is not None:
            lines.append(f"  STALE since {check.stale_since:%Y-%m-%d %H:%M} UTC: a car reported since is not on it")
        print("\n".join(lines))
    return 1 if check.blocked else 0


def describe_offline(v: OfflineVerification, language: str) -> list[str]:
    lines = [
        f"  offline data: trust bundle made {v.bundle_made_at:%Y-%m-%d %H:%M} UTC, "
        f"status made {v.status_made_at:%Y-%m-%d %H:%M} UTC"
    ]
    if v.stale_since is not None:
        lines.append(f"  STALE since {v.stale_since:%Y-%m-%d %H:%M} UTC: nothing is confirmed VALID")
    if v.body is not None:
        lines.append(f"  not known offline: {', '.join(v.not_known)}")
    return lines


def verify_offline(args: argparse.Namespace, text: str, why: str = "") -> int:
    """Print the offline verdict as `verify` prints an online one, plus where it came from."""
    from vimark.client.cli.marks import describe_verification

    language = language_of(args.lang)
    v = OfflineVerifier.open(args.offline or args.fallback_offline).verify(text)
    r = v.response(language)
    if args.json:
        data = to_json_dict(r)
        data["offline"] = {
            "bundle_made_at": v.bundle_made_at.isoformat(),
            "status_made_at": v.status_made_at.isoformat(),
            "stale_since": v.stale_since.isoformat() if v.stale_since else None,
            "not_known": list(v.not_known),
            "fallback_reason": why,
        }
        print(dump(data))
    else:
        head = [f"OFFLINE ({why})" if why else "OFFLINE"]
        print("\n".join([*head, describe_verification(r, language), *describe_offline(v, language)]))
    return 0 if r.verdict == pb.VERDICT_VALID else 1


def verify_online_or_offline(args: argparse.Namespace, text: str) -> int:
    """--fallback-offline: the server's answer if it comes within --timeout, else the offline one."""
    from vimark.client.cli.marks import describe_verification

    started = time.monotonic()
    try:
        with connect(args) as client:
            r = client.verify(text, at_date=args.at)
    except Unavailable as exc:
        waited = time.monotonic() - started
        return verify_offline(args, text, f"the server did not answer within {waited:.1f} s: {exc.message}")
    print(dump(to_json_dict(r)) if args.json else describe_verification(r, language_of(args.lang)))
    return 0 if r.verdict == pb.VERDICT_VALID else 1
