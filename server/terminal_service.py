"""TerminalService: a police terminal's offline data (trust bundle, status snapshot in chunks,
deltas). Police and operators only (policy.py)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from vimark.client.errors import InvalidArgument
from vimark.server.auth import Authenticator, Caller
from vimark.server.limits import RateLimiter
from vimark.server.metrics import Metrics
from vimark.server.rpc import ChangeFollower, Servicer, rpc
from vimark.server.terminal_status import TerminalData
from vimark.v1 import terminal_service_pb2 as tpb
from vimark.v1 import terminal_service_pb2_grpc as tpb_grpc

CHUNK_BYTES = 1024 * 1024  # under the server's 2 MiB message limit
DIGEST_BYTES = 32


class TerminalService(Servicer, tpb_grpc.TerminalServiceServicer):
    def __init__(
        self,
        metrics: Metrics,
        sync: ChangeFollower,
        auth: Authenticator,
        limiter: RateLimiter | None,
        *,
        data: TerminalData,
    ) -> None:
        super().__init__(metrics, sync, auth, limiter)
        self.data = data

    @rpc("GetTrustBundle")
    def GetTrustBundle(
        self, request: tpb.GetTrustBundleRequest, context: grpc.ServicerContext, caller: Caller
    ) -> tpb.GetTrustBundleResponse:
        return tpb.GetTrustBundleResponse(signed_bundle=self.data.bundle())

    @rpc("GetStatusSnapshot")
    def GetStatusSnapshot(
        self, request: tpb.GetStatusSnapshotRequest, context: grpc.ServicerContext, caller: Caller
    ) -> Iterator[tpb.GetStatusSnapshotResponse]:
        # Built and signed before the first chunk, so that a failure is this call's status.
        envelope = self.data.snapshot().envelope
        chunks = [envelope[i : i + CHUNK_BYTES] for i in range(0, len(envelope), CHUNK_BYTES)] or [b""]
        first = tpb.GetStatusSnapshotResponse(chunk=chunks[0], total_size=len(envelope))
        return iter([first, *(tpb.GetStatusSnapshotResponse(chunk=c) for c in chunks[1:])])

    @rpc("GetStatusDelta")
    def GetStatusDelta(
        self, request: tpb.GetStatusDeltaRequest, context: grpc.ServicerContext, caller: Caller
    ) -> tpb.GetStatusDeltaResponse:
        if len(request.since_digest) != DIGEST_BYTES:
            raise InvalidArgument("since_digest", f"the held snapshot's content digest, {DIGEST_BYTES} bytes")
        delta = self.data.delta(request.since_change_id, request.since_digest)
        if delta is None:
            return tpb.GetStatusDeltaResponse(full_download_needed=True)
        return tpb.GetStatusDeltaResponse(signed_delta=delta)
