"""Loopback ports for servers the tests start as subprocesses.

A port the kernel hands out for port 0 lies in the ephemeral range, where any outgoing connection
(a gRPC channel, a PostgreSQL session) may take it between our check and the server's bind; and
`serve --workers N` binds metrics on N consecutive ports. So ports come from below the ephemeral
range, and a run of `count` of them is taken only if every one binds."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 20000
_pick = random.SystemRandom()  # not the seeded module generator: two test runs must not pick alike


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive loopback ports that are free now and outside the ephemeral range."""
    ceiling = max(_ephemeral_floor(), _LOWEST + 1000) - count
    for _ in range(200):
        base = _pick.randrange(_LOWEST, ceiling)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no run of {count} free loopback ports between {_LOWEST} and {ceiling}")
