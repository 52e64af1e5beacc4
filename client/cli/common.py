"""What every client command shares: --server, --json, --timeout, TLS (--ca --cert --key), and
printing a response."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from vimark.client.errors import TlsFileError
from vimark.client.messages import LANGUAGES, language_of
from vimark.client.sdk import DEFAULT_SERVER, VimarkClient, tls_credentials, to_json_dict

TLS_FLAGS = (("ca", "VIMARK_CA"), ("cert", "VIMARK_CERT"), ("key", "VIMARK_KEY"))


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, metavar="HOST:PORT", help=f"vimark server (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the response's fields")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="deadline per call")
    parser.add_argument(
        "--lang",
        choices=LANGUAGES,
        help="language of answers for a person: zh (中文) or en (default: VIMARK_LANG, else the locale)",
    )
    tls = parser.add_argument_group(
        "TLS", "give all three (or none: plaintext, for a development server); `vimark pki` makes them"
    )
    tls.add_argument(
        "--ca",
        type=Path,
        default=_env_path("VIMARK_CA"),
        metavar="FILE",
        help="CA that signed the server (env VIMARK_CA)",
    )
    tls.add_argument(
        "--cert",
        type=Path,
        default=_env_path("VIMARK_CERT"),
        metavar="FILE",
        help="this client's certificate; it names the caller's role (env VIMARK_CERT)",
    )
    tls.add_argument(
        "--key", type=Path, default=_env_path("VIMARK_KEY"), metavar="FILE", help="its private key (env VIMARK_KEY)"
    )


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


def connect(args: argparse.Namespace) -> VimarkClient:
    """A client for --server: over TLS with a client certificate given --ca --cert --key, else plaintext."""
    given = [flag for flag, _ in TLS_FLAGS if getattr(args, flag, None) is not None]
    language = language_of(getattr(args, "lang", None))
    if not given:
        return VimarkClient(args.server, timeout=args.timeout, language=language)
    if len(given) != len(TLS_FLAGS):
        missing = [f"--{flag} (or {env})" for flag, env in TLS_FLAGS if flag not in given]
        raise TlsFileError(f"TLS needs --ca, --cert and --key together; missing {', '.join(missing)}")
    credentials = tls_credentials(args.ca, args.cert, args.key)
    return VimarkClient(args.server, timeout=args.timeout, credentials=credentials, language=language)


def emit(args: argparse.Namespace, message: Message, human: str) -> None:
    """--json prints the response as one JSON object; otherwise a few lines for a person."""
    print(dump(to_json_dict(message)) if args.json else human)


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)
