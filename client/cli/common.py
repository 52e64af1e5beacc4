"""What every client command shares: --server, --json, --timeout, and printing a response."""

from __future__ import annotations

import argparse
import json
from typing import Any

from google.protobuf.message import Message

from vimark.client.sdk import DEFAULT_SERVER, VimarkClient, to_json_dict


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, metavar="HOST:PORT", help=f"vimark server (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the response's fields")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="deadline per call")


def connect(args: argparse.Namespace) -> VimarkClient:
    return VimarkClient(args.server, timeout=args.timeout)


def emit(args: argparse.Namespace, message: Message, human: str) -> None:
    """--json prints the response as one JSON object; otherwise a few lines for a person."""
    print(dump(to_json_dict(message)) if args.json else human)


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)
