"""The door every call passes before it may hold a handler thread: identify, bound, then read.

A sync gRPC server gives each call one of its handler threads as soon as the call starts. For a
call whose request is one message, gRPC's own unary handler would then wait on that thread for the
message, before any of vimark's code runs: a caller that opens calls and never sends (a revoked
certificate, or none naming a role) could hold every thread, and Verify would queue behind it.
So this interceptor serves every method with a request stream instead, and in this order:

  1. identify the caller (certificate, CRL, expiry: `Authenticator.identify`) and, for vimark's
     own RPCs, check that its role may call the method (policy.py): refused at once otherwise;
  2. refuse it at once (RESOURCE_EXHAUSTED) if its caller already has `per_caller` calls reading
     their request (a caller with none is never refused because of others);
  3. read the one message; a call still reading after `receive_timeout` seconds is dropped
     (CANCELLED) and its thread freed, and so are the newest calls of the caller holding the most
     while more than `total` calls have been reading for over `stall_grace` seconds;
  4. run the method with the caller known (rpc.py reads it from here).

Long-lived streams (a health Watch, reflection) are capped server-wide as well, since they hold a
thread for as long as the client likes. Development mode has one shared caller: `per_caller` is
None there and only the global bounds apply.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from vimark.client.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated
from vimark.server.auth import Authenticator, Caller
from vimark.server.policy import roles_allowed
from vimark.server.wire_errors import abort

log = logging.getLogger("vimark.server")

VIMARK_METHODS = "/vimark.v1."
_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("vimark_caller", default=None)


def current_caller() -> Caller | None:
    """The caller the guard identified for the call running on this thread, if any."""
    return _CALLER.get()


class Slots:
    """At most `limit` holders at once, server-wide, and at most `per_key` per key (None: no per-key bound)."""

    def __init__(self, limit: int, per_key: int | None = None) -> None:
        self._limit = limit
        self._per_key = per_key
        self._open = 0
        self._by_key: dict[object, int] = {}
        self._lock = threading.Lock()

    def take(self, key: object = None) -> bool:
        with self._lock:
            held = self._by_key.get(key, 0)
            if self._open >= self._limit or (self._per_key is not None and held >= self._per_key):
                return False
            self._open += 1
            self._by_key[key] = held + 1
            return True

    def give_back(self, key: object = None) -> None:
        with self._lock:
            self._open -= 1
            held = self._by_key[key] - 1
            if held:
                self._by_key[key] = held
            else:
                del self._by_key[key]


class Waiting:
    """The calls reading their request message. A caller may have at most `per_key` of them at
    once, whatever their age (so a burst of calls that send nothing takes at most that many
    threads); a caller with none is never refused because of others. One thread for the whole
    server (a timer per call would cost a thread per call) cancels a call still reading after
    `timeout`, and, while more than `total` calls have been reading for over `grace` seconds,
    the newest of those of the caller holding the most."""

    def __init__(self, total: int, per_key: int | None, grace: float, timeout: float) -> None:
        self._total = total
        self._per_key = per_key
        self._grace = grace
        self._timeout = timeout
        self._calls: dict[int, tuple[float, object, grpc.ServicerContext]] = {}  # ticket -> (start, key, call)
        self._held: dict[object, int] = {}  # key -> its calls reading now
        self._tickets = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def admit(self, key: object, context: grpc.ServicerContext) -> int:
        """A ticket for a call of `key` about to read its request, or 0: the caller already has its
        allowance reading."""
        with self._lock:
            held = self._held.get(key, 0)
            if self._per_key is not None and held >= self._per_key:
                return 0
            self._held[key] = held + 1
            ticket = next(self._tickets)
            self._calls[ticket] = (time.monotonic(), key, context)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vimark-receive-watch", daemon=True)
                self._thread.start()
        self._wake.set()
        return ticket

    def release(self, ticket: int) -> bool:
        """The call's read is over. False if the watcher had already dropped it: the call is
        cancelled, so its request must not be acted on (an Issue the caller never hears of)."""
        with self._lock:
            entry = self._calls.pop(ticket, None)
            if entry is not None:
                self._forget(entry[1])
        return entry is not None

    def _forget(self, key: object) -> None:
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]

    def _run(self) -> None:
        tick = min(self._grace, self._timeout) / 4
        while True:
            self._wake.wait()
            time.sleep(tick)
            now = time.monotonic()
            with self._lock:
                if not self._calls:
                    self._wake.clear()
                    continue
                doomed = [t for t, (started, _, _) in self._calls.items() if now - started > self._timeout]
                stalled = [(t, k, started) for t, (started, k, _) in self._calls.items() if self._grace < now - started]
                excess = len(stalled) - len(doomed) - self._total
                if excess > 0:
                    # The caller holding the most stalled calls loses its newest first.
                    count: dict[object, int] = {}
                    for _, k, _ in stalled:
                        count[k] = count.get(k, 0) + 1
                    live = [item for item in stalled if item[0] not in doomed]
                    live.sort(key=lambda item: (-count[item[1]], -item[2]))
                    doomed += [t for t, _, _ in live[:excess]]
                cancelled = []
                for ticket in doomed:
                    _, key, context = self._calls.pop(ticket)
                    self._forget(key)
                    cancelled.append(context)
            for context in cancelled:
                context.cancel()  # type: ignore[no-untyped-call]  # wakes the handler's read, freeing its thread


class CallGuard(grpc.ServerInterceptor):  # type: ignore[type-arg,misc]
    def __init__(
        self,
        auth: Authenticator,
        *,
        total: int,
        per_caller: int | None,
        max_streams: int,
        receive_timeout: float = 5.0,
        stall_grace: float = 1.0,
    ) -> None:
        self._auth = auth
        self._waiting = Waiting(total, per_caller, grace=stall_grace, timeout=receive_timeout)
        self._per_caller = per_caller
        self._streams = Slots(max_streams)
        self._receive_timeout = receive_timeout
        self._guarded: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}  # method -> its guarded handler
        self.refused = 0  # calls turned away at the door (tests and the log read it)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: Any,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        # The services are registered before the server starts and never change: each method's
        # guarded handler is made once, not per call.
        method: str = details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            handler = continuation(details)
            if handler is None:
                return None  # an unknown method: not cached, so a flood of made-up names costs no memory
            guarded = self._guarded.setdefault(method, self._guard(handler, method))
        return guarded

    def _guard(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        name = method.rsplit("/", 1)[-1]
        allowed = roles_allowed(name) if method.startswith(VIMARK_METHODS) else None
        args = (handler.request_deserializer, handler.response_serializer)
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._one_message(handler.unary_unary, name, allowed), *args)
        if handler.unary_stream is not None:
            behaviour = self._capped(self._one_message(handler.unary_stream, name, allowed))
            return grpc.stream_stream_rpc_method_handler(behaviour, *args)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(self._capped(self._admitted(handler.stream_stream)), *args)
        assert handler.stream_unary is not None  # one of the four is always set
        return grpc.stream_unary_rpc_method_handler(self._admitted(handler.stream_unary), *args)

    def _identify(self, context: grpc.ServicerContext, name: str, allowed: frozenset[Any] | None) -> Caller:
        try:
            caller = self._auth.identify(context)
            if allowed is not None and caller.role not in allowed and not caller.unrestricted:
                roles = ", ".join(sorted(r.value for r in allowed))
                raise PermissionDenied(f"{name} is for {roles}; this caller is {caller.role.value}")
        except (Unauthenticated, PermissionDenied) as exc:
            self.refused += 1
            abort(context, exc)
        return caller

    def _one_message(
        self, behaviour: Callable[[Any, Any], Any], name: str, allowed: frozenset[Any] | None
    ) -> Callable[..., Any]:
        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            caller = self._identify(context, name, allowed)
            key = (caller.role, caller.caller_id) if self._per_caller is not None else None
            ticket = self._waiting.admit(key, context)
            if not ticket:
                self.refused += 1
                busy = "too many calls of this caller are waiting for their request; send the request with the call"
                abort(context, ResourceExhausted(busy, retry_after=1.0, reason="SERVER_BUSY"))
            try:
                request = next(requests, None)
            except grpc.RpcError:  # cancelled for stalling, or by the client
                request = None
            if not self._waiting.release(ticket):
                return None  # dropped by the watcher: the call is cancelled, its request is not acted on
            if request is None:
                abort(context, InvalidArgument("request", "no request message within the time allowed"))
            token = _CALLER.set(caller)
            try:
                return behaviour(request, context)
            finally:
                _CALLER.reset(token)

        return guarded

    def _admitted(self, behaviour: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            self._identify(context, "", None)
            return behaviour(requests, context)

        return guarded

    def _capped(self, behaviour: Callable[[Any, Any], Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def guarded(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._identify(context, "", None)  # before a slot is taken (the inner behaviour checks again)
            if not self._streams.take():
                self.refused += 1
                busy = "too many health-watch and reflection streams are open; try again later"
                abort(context, ResourceExhausted(busy, retry_after=1.0, reason="SERVER_BUSY"))
            once = threading.Lock()

            def give_back() -> None:  # once, however the call ends (finished, cancelled, dropped)
                if once.acquire(blocking=False):
                    self._streams.give_back()

            context.add_callback(give_back)
            try:
                yield from behaviour(requests, context)
            finally:
                give_back()

        return guarded
