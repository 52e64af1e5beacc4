"""vimark pki init | issue | revoke: a development PKI for TLS with client certificates.

The server is started with DIR/server.pem, server.key, ca.pem (as client CA) and crl.pem; each
terminal, app or partner gets its own ROLE-ID.pem/.key and connects with --ca --cert --key.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vimark.server import pki
from vimark.server.policy import ROLE_NAMES


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("pki", help="a development CA: server and client certificates, revocation")
    sub = group.add_subparsers(dest="pki_command", required=True)

    p = sub.add_parser("init", help="create a CA, a server certificate and an empty CRL in DIR")
    p.add_argument("dir", type=Path)
    p.add_argument(
        "--host",
        action="append",
        metavar="H",
        help="a DNS name or IP address the server is reached at; repeatable (default localhost 127.0.0.1 ::1)",
    )
    p.set_defaults(func=init)

    for name, help_text in (
        ("issue", "issue a client certificate naming a role and a caller id: DIR/ROLE-ID.pem and .key"),
        ("revoke", "revoke DIR/ROLE-ID.pem: a running server refuses it from the next call"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("dir", type=Path)
        p.add_argument("--role", required=True, choices=ROLE_NAMES)
        p.add_argument(
            "--id", required=True, dest="caller_id", metavar="ID", help="caller id: 1-64 of A-Z a-z 0-9 . _ -"
        )
        p.set_defaults(func=issue if name == "issue" else revoke)


def init(args: argparse.Namespace) -> int:
    written = pki.init(args.dir, tuple(args.host) if args.host else pki.DEFAULT_HOSTS)
    print(f"wrote CA {written.certificate} (key {written.key}), server.pem, server.key and crl.pem in {args.dir}")
    return 0


def issue(args: argparse.Namespace) -> int:
    written = pki.issue(args.dir, args.role, args.caller_id)
    print(f"wrote {written.certificate} and {written.key} for {args.role}/{args.caller_id} (serial {written.serial:x})")
    return 0


def revoke(args: argparse.Namespace) -> int:
    written = pki.revoke(args.dir, args.role, args.caller_id)
    print(f"revoked {args.role}/{args.caller_id} (serial {written.serial:x}) in {written.certificate}")
    return 0
