"""What every vimark RPC does around its handler: identify the caller, check the policy table
and the caller's rate, time the call, and turn a VimarkError into a gRPC status.

How an error crosses the wire is wire_errors.py's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import grpc

from vimark.client.errors import (
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    VimarkError,
)
from vimark.server.auth import Authenticator, Caller
from vimark.server.guard import current_caller
from vimark.server.limits import RateLimiter
from vimark.server.metrics import Metrics
from vimark.server.policy import POLICY, RolePolicy, roles_allowed
from vimark.server.wire_errors import abort

log = logging.getLogger("vimark.server")

R = TypeVar("R")


class ChangeFollower(Protocol):
    """Brings the index up to the store's change log (after a local write, and in the background)."""

    ready: bool

    def catch_up(self, at_least: int | None = None) -> None: ...


class Servicer:
    """What every servicer holds for `rpc`."""

    def __init__(
        self, metrics: Metrics, sync: ChangeFollower, auth: Authenticator, limiter: RateLimiter | None
    ) -> None:
        self.metrics = metrics
        self.sync = sync
        self.auth = auth
        self.limiter = limiter  # None: no per-caller limit (development mode has one shared caller)

    def require_ready(self) -> None:
        if not self.sync.ready:
            raise Unavailable("the validity index is still loading")


def policy_of(caller: Caller) -> RolePolicy:
    return POLICY[caller.role]


def rpc(name: str, cost: Callable[[Any], int] = lambda request: 1) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Identify the caller, check that its role may call `name` and its rate, time the call, count
    it by code, and turn VimarkErrors into gRPC statuses. The method receives the Caller after the
    request."""
    allowed = roles_allowed(name)
    if not allowed:
        raise ValueError(f"no role may call {name}: add it to server/policy.py")

    def wrap(method: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(method)
        def handler(self: Servicer, request: Any, context: grpc.ServicerContext) -> R:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                caller = current_caller() or self.auth.identify(context)  # the guard identified it first
                if caller.role not in allowed and not caller.unrestricted:
                    roles = ", ".join(sorted(r.value for r in allowed))
                    raise PermissionDenied(f"{name} is for {roles}; this caller is {caller.role.value}")
                if self.limiter is not None:
                    try:
                        self.limiter.take(caller, cost(request))
                    except ResourceExhausted:
                        self.metrics.rate_limited.labels(caller.role.value).inc()
                        raise
                return method(self, request, context, caller)
            except VimarkError as exc:
                code = grpc.StatusCode[exc.code]
                if code is grpc.StatusCode.INTERNAL:  # an error class with no code of its own: a bug
                    log.exception("%s failed", name)
                abort(context, exc)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", name)
                context.abort(code, f"{name} failed inside vimark; the server log has the details")
            finally:
                self.metrics.rpc_finished(name, code.name, time.perf_counter() - start)

        return handler

    return wrap
