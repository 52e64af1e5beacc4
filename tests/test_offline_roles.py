"""Over real TLS: only police terminals and operators get the offline data RPCs; partners, the
public and issuers get none of the status data. A server without an online key says so."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tls_fixtures import Connect
from vimark.client.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from vimark.client.sdk import VimarkClient
from vimark.server.policy import Role

CALLS: dict[str, Callable[[VimarkClient], object]] = {
    "GetTrustBundle": lambda c: c.trust_bundle(),
    "GetStatusSnapshot": lambda c: c.status_snapshot(),
    "GetStatusDelta": lambda c: c.status_delta(1, bytes(32)),
}


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_offline_data_is_for_police_and_operators_only(role: Role, connect: Connect) -> None:
    client = connect(role)
    for rpc, call in CALLS.items():
        if role in (Role.POLICE, Role.OPERATOR):
            # Through the gate; this server was started without --terminal-keys.
            with pytest.raises(FailedPrecondition, match="--terminal-keys") as refused:
                call(client)
            assert refused.value.reason == "NO_ONLINE_KEY", rpc
        else:
            with pytest.raises(PermissionDenied, match=role.value):
                call(client)


def test_a_delta_request_without_a_digest_is_refused(connect: Connect) -> None:
    with pytest.raises(InvalidArgument, match="since_digest"):
        connect(Role.POLICE).status_delta(1, b"short")
