"""Health checking and reflection behind the same door as vimark's own services.

vimark's servicers identify every caller in `service.rpc` (certificate, CRL, expiry, role, rate).
The two services gRPC brings, health and reflection, are guarded here instead, by a server
interceptor: the caller must be one `Authenticator.identify` accepts (a revoked terminal is refused
there too), and long-lived streams are capped. A sync gRPC server gives each call one of its
handler threads for as long as the call lasts, and a health Watch or a reflection stream lasts as
long as its client likes: without the cap, a few idle streams would hold every thread, and Verify
would queue behind them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from vimark.client.errors import Unauthenticated
from vimark.server.auth import Authenticator

VIMARK_METHODS = "/vimark.v1."  # guarded by service.rpc


class StreamSlots:
    """At most `limit` streams open at once, server-wide."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._open >= self._limit:
                return False
            self._open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._open -= 1


class GuardOtherServices(grpc.ServerInterceptor):  # type: ignore[type-arg,misc]
    def __init__(self, auth: Authenticator, max_streams: int) -> None:
        self._auth = auth
        self._slots = StreamSlots(max_streams)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: Any,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(VIMARK_METHODS):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
            )
        assert handler.stream_unary is not None  # one of the four is always set
        return grpc.stream_unary_rpc_method_handler(
            self._unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )

    def _admit(self, context: grpc.ServicerContext) -> None:
        try:
            self._auth.identify(context)
        except Unauthenticated as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)

    def _unary(self, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            self._admit(context)
            return behaviour(request, context)

        return guarded

    def _stream(self, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._admit(context)
            if not self._slots.take():
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many health-watch and reflection streams are open; try again later",
                )
            once = threading.Lock()

            def give_back() -> None:  # once, however the call ends (finished, cancelled, dropped)
                if once.acquire(blocking=False):
                    self._slots.give_back()

            context.add_callback(give_back)
            try:
                yield from behaviour(request, context)
            finally:
                give_back()

        return guarded
