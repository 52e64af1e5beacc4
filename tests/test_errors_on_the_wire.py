"""Errors cross the wire as their code, an ErrorInfo with an ErrorReason name, a BadRequest naming
the field, and come back as the same typed exception; an error with no code of its own is INTERNAL."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vimark.client.errors import REASONS, InternalError, InvalidArgument, VimarkError
from vimark.client.sdk import VimarkClient, error_from_rpc
from vimark.server.app import VimarkServer
from vimark.server.auth import Caller, DevAuth
from vimark.server.metrics import Metrics
from vimark.server.rpc import Servicer, rpc
from vimark.v1 import mark_service_pb2 as pb


def test_a_bad_field_carries_error_info_and_a_field_violation(server: VimarkServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        verify = channel.unary_unary(
            "/vimark.v1.MarkService/Verify",
            request_serializer=pb.VerifyRequest.SerializeToString,
            response_deserializer=pb.VerifyResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            verify(pb.VerifyRequest(qr_text="VM1:x", at_date="2026-13-45"), timeout=10)
    error = caught.value
    assert isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    unpacked = [d for d in status.details if d.Unpack(info) or d.Unpack(bad)]
    assert len(unpacked) == 2
    assert info.reason == "INVALID_FIELD" and info.reason in REASONS and info.domain == "vimark.v1"
    assert [v.field for v in bad.field_violations] == ["at_date"]
    assert bad.field_violations[0].description and "at_date" not in bad.field_violations[0].description
    again = error_from_rpc(error)
    assert isinstance(again, InvalidArgument) and again.field == "at_date"


def test_the_sdk_names_the_field(client: VimarkClient) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.lookup(plate_number="闽C12345", plate_type="2x")
    assert caught.value.field == "plate_type"


class _Refused(Exception):
    pass


class _Context:
    """The part of grpc.ServicerContext that rpc() uses when it refuses a call."""

    def __init__(self) -> None:
        self.status: Any = None

    def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise _Refused

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise _Refused


class _Broken(Servicer):
    @rpc("Verify")
    def Verify(self, request: object, context: object, caller: Caller) -> None:
        raise VimarkError("a refusal nobody mapped")


def test_an_unmapped_error_is_internal_on_the_wire_and_in_the_sdk() -> None:
    servicer = _Broken(Metrics(), _Ready(), DevAuth(None), None)
    context = _Context()
    with pytest.raises(_Refused):
        servicer.Verify(pb.VerifyRequest(), context)
    assert context.status.code == grpc.StatusCode.INTERNAL
    assert isinstance(error_from_rpc(_AsCall(grpc.StatusCode.INTERNAL, "x")), InternalError)


class _Ready:
    ready = True

    def catch_up(self, at_least: int | None = None) -> None:
        pass


class _AsCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return ()

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def test_an_error_quoting_a_huge_field_stays_a_clear_error(client: VimarkClient) -> None:
    """A message that quotes the request is cut on the wire: trailers are bounded, and a status that
    outgrew them used to come back as a traceback in the SDK."""
    for huge in (5_000, 20_000):
        with pytest.raises(InvalidArgument) as caught:
            client.lookup(vin="x" * huge)
        assert caught.value.field == "vin" and len(caught.value.message) < 1200
