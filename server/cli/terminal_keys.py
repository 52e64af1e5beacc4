"""vimark keys anchor-init | anchor-rotate | online-rotate: the keys of police terminals' offline
data (server/terminal_keys.py). The anchor directory belongs on an offline machine; only the
online directory goes to the server (`vimark serve --terminal-keys DIR`)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

DEFAULT_ANCHOR = Path("vimark-anchor")
DEFAULT_ONLINE = Path("vimark-online-key")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("anchor-init", help="create the trust anchor for police terminals (keep it offline)")
    p.add_argument("anchor_dir", nargs="?", default=DEFAULT_ANCHOR, type=Path)
    p.set_defaults(func=manage)
    p = sub.add_parser("anchor-rotate", help="replace the trust anchor; terminals get the new anchor.pub")
    p.add_argument("anchor_dir", nargs="?", default=DEFAULT_ANCHOR, type=Path)
    p.set_defaults(func=manage)
    p = sub.add_parser("online-rotate", help="make a new online key for terminal data, certified by the anchor")
    p.add_argument("online_dir", nargs="?", default=DEFAULT_ONLINE, type=Path)
    p.add_argument("--anchor", default=DEFAULT_ANCHOR, type=Path, metavar="DIR", help="the anchor directory")
    p.add_argument("--days", default=90, type=int, metavar="N", help="how long the certificate lasts (default 90)")
    p.set_defaults(func=manage)


def manage(args: argparse.Namespace) -> int:
    from vimark.server.terminal_keys import AnchorDirectory, OnlineKeyDirectory

    if args.keys_command == "anchor-init":
        key = AnchorDirectory(args.anchor_dir).init()
        print(f"created trust anchor {key.hex()}; give terminals {args.anchor_dir / 'anchor.pub'}")
    elif args.keys_command == "anchor-rotate":
        old, new = AnchorDirectory(args.anchor_dir).rotate()
        print(
            f"trust anchor {new.hex()} replaces {old.hex()}: give terminals the new {args.anchor_dir / 'anchor.pub'} "
            "(it trusts both), then run `vimark keys online-rotate` for every server"
        )
    else:
        info = OnlineKeyDirectory(args.online_dir).rotate(AnchorDirectory(args.anchor), dt.timedelta(days=args.days))
        print(f"online key {info.key_id} in {args.online_dir}, certified until {info.end:%Y-%m-%d %H:%M} UTC")
    return 0
