"""How a VimarkError crosses the wire: its canonical code, a google.rpc.ErrorInfo whose `reason` is
an ErrorReason name (errors.proto), a google.rpc.BadRequest naming the field of an
InvalidArgument, and a RetryInfo for a rate limit, so the SDK raises the same typed exception on
the other side (sdk.error_from_rpc)."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vimark.client.errors import InvalidArgument, ResourceExhausted, VimarkError

DOMAIN = "vimark.v1"


MAX_TEXT = 512  # characters of a message or field description sent back: errors may quote the input


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def abort(context: grpc.ServicerContext, error: VimarkError) -> NoReturn:
    """End the call with `error` (its message cut to MAX_TEXT: a status travels in the trailers,
    which gRPC bounds, and a message may quote a request's huge field)."""
    code = grpc.StatusCode[error.code]
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=_short(error.field), description=_short(error.description)
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    if isinstance(error, ResourceExhausted):
        delay = Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=_short(error.message), details=details)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returns only by raising")


def _packed(message: Any) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail
