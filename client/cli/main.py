"""The `vimark` command: one entry point, one small module per command group.

Exit status: 0 success (for verify: the mark is VALID), 1 verify answered another verdict,
2 an error (bad input, refused, unreachable), printed as one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from vimark.client.cli import audit, marks, pki, serve, vehicles
from vimark.client.errors import VimarkError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vimark", description="Electronic motor-vehicle inspection marks.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve.register(commands)
    marks.register(commands)
    vehicles.register(commands)
    audit.register(commands)
    pki.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except VimarkError as exc:
        print(f"vimark: {exc.message} [{exc.reason}]", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
