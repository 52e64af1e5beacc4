"""The `vimark` command: the client's commands plus the server-side groups (serve, keys, pki).

The server package adds its commands to the client's command line, never the other way round:
a terminal-only install runs vimark.client.cli.main without any of the server.
"""

from __future__ import annotations

import sys

from vimark.client.cli import main as client_main
from vimark.server.cli import pki, serve


def main(argv: list[str] | None = None) -> int:
    return client_main.main(argv, (serve.register, *client_main.CLIENT_COMMANDS, pki.register))


if __name__ == "__main__":
    sys.exit(main())
