"""The client's commands (issue, verify, lookup, present, render, vehicles, audit): one small
module per command group. This `main` is a terminal-only install's command line; the full `vimark`
command (vimark.server.cli.main) adds the server-side groups (serve, keys, pki).

Exit status: 0 success (for verify: the mark is VALID), 1 verify answered another verdict,
2 an error (bad input, refused, unreachable), printed as one line on stderr.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from vimark.client.cli import audit, health, marks, terminal, vehicles
from vimark.client.errors import InvalidArgument, VimarkError

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
CLIENT_COMMANDS: tuple[Register, ...] = (
    marks.register,
    vehicles.register,
    audit.register,
    health.register,
    terminal.register,
)


def build_parser(groups: Sequence[Register] = CLIENT_COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vimark", description="Electronic motor-vehicle inspection marks.")
    commands = parser.add_subparsers(dest="command", required=True)
    for register in groups:
        register(commands)
    return parser


# Python decodes argv with surrogateescape: bytes the locale cannot decode become lone surrogates.
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_arguments(argv: list[str]) -> None:
    """Refuse an argument that is not text in the locale's encoding, before anything reads it:
    protobuf cannot encode it, so it would otherwise fail deep inside a call with a traceback."""
    for position, arg in enumerate(argv, start=1):
        if not _SURROGATE.search(arg):
            continue
        name, text = f"argument {position}", arg
        flag, has_value, value = arg.partition("=")
        previous = argv[position - 2] if position > 1 else ""
        if arg.startswith("--") and has_value and not _SURROGATE.search(flag):
            name, text = flag, value
        elif previous.startswith("-") and not _SURROGATE.search(previous):
            name += f" (after {previous})"  # maybe its value; only the parser knows, and it must not run yet
        # The bytes as given, escaped to ASCII: the message itself must print on any stderr.
        encoding = sys.getfilesystemencoding()
        raw = ascii(text.encode(encoding, "surrogateescape"))[1:]
        if len(raw) > 60:
            raw = raw[:57] + "..."
        raise InvalidArgument(name, f"{raw} is not valid {encoding.upper()} text")


# Request fields whose command-line flag is not simply --FIELD (with - for _).
_FLAG_OF_FIELD = {"at_date": "at", "station_id": "station", "status_codes": "status"}


def flag_names(parser: argparse.ArgumentParser, args: argparse.Namespace | None) -> dict[str, str]:
    """Request field -> the flag a person types for it, in the (sub-)command that was run."""
    names: dict[str, str] = {}
    current: argparse.ArgumentParser | None = parser if args is not None else None
    while current is not None:
        chosen = None
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
            elif action.option_strings:
                names[action.dest] = max(action.option_strings, key=len)
        current = chosen
    for field, dest in _FLAG_OF_FIELD.items():
        if dest in names:
            names[field] = names[dest]
    return names


def in_flags(error: VimarkError, names: dict[str, str]) -> str:
    """The error's message with the request's field names turned into the flags that were typed."""
    message = error.message
    if isinstance(error, InvalidArgument) and error.field in names:
        message = f"{names[error.field]}: {error.description}"
    for field in sorted(names, key=len, reverse=True):
        if "_" in field:  # only multi-word field names: single words are ordinary English
            message = re.sub(rf"\b{field}\b", names[field], message)
    return message


def main(argv: list[str] | None = None, groups: Sequence[Register] = CLIENT_COMMANDS) -> int:
    """Run one command; every VimarkError becomes one line on stderr and exit status 2, here only."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(groups)
    args: argparse.Namespace | None = None
    try:
        check_arguments(argv)
        args = parser.parse_args(argv)
        return int(args.func(args))
    except VimarkError as exc:
        print(f"vimark: {in_flags(exc, flag_names(parser, args))} [{exc.reason}]", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
