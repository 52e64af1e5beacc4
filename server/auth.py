"""Who is calling: a role and a caller id for every RPC.

In production both come from the caller's TLS client certificate; in development mode (plaintext,
loopback only) every caller gets the role fixed at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

from vimark.server.views import Role


@dataclass(frozen=True)
class Caller:
    role: Role
    caller_id: str  # e.g. a terminal number; what the audit log and the rate limiter key on


class Authenticator(Protocol):
    def identify(self, context: grpc.ServicerContext) -> Caller:
        """The caller of this RPC; raises Unauthenticated when there is none."""
        ...


class DevAuth:
    """Development mode: no TLS, so every caller gets the role fixed at start."""

    def __init__(self, role: Role) -> None:
        self._caller = Caller(role, f"dev-{role.value}")

    def identify(self, context: grpc.ServicerContext) -> Caller:
        return self._caller
