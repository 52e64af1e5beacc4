"""Issuing keys: ids and lives, rotation that keeps old marks valid, revocation that voids them."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from conftest import MovableClock, start_server, vehicle
from vimark.client.errors import FailedPrecondition, KeyStoreError
from vimark.client.sdk import VimarkClient
from vimark.server.keys import KeyDirectory
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb


def test_private_keys_are_owner_only_pem(keys_dir: Path) -> None:
    secrets = sorted(p.name for p in keys_dir.iterdir() if p.name != "keys.json")
    assert secrets == ["seal-1.key", "signing-1.pem"]
    for name in secrets:
        assert stat.S_IMODE((keys_dir / name).stat().st_mode) == 0o600
    assert (keys_dir / "signing-1.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(KeyStoreError):
        KeyDirectory(keys_dir).init()  # never overwrite keys


def wait_for_key(client: VimarkClient, key_id: int, status: int) -> None:
    deadline = time.monotonic() + 5
    while not any(k.key_id == key_id and k.status == status for k in client.trust_list().keys):
        assert time.monotonic() < deadline, f"server did not reload key {key_id}"
        time.sleep(0.05)


def test_rotation_keeps_old_marks_and_revocation_voids_them(
    sqlite_url: str, keys_dir: Path, clock: MovableClock
) -> None:
    server = start_server(sqlite_url, keys_dir, clock)
    try:
        with VimarkClient(f"127.0.0.1:{server.port}") as client:
            client.upsert_vehicles(
                [
                    vehicle(registered_on="2026-11-02"),
                    vehicle("闽C54321", vin="LSVAB2BJ5KN000002", registered_on="2026-11-02"),
                ]
            )
            old = client.issue(
                request_id="a", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            assert old.key_id == 1
            KeyDirectory(keys_dir).rotate()
            wait_for_key(client, 2, pb.KEY_STATUS_ACTIVE)
            new = client.issue(
                request_id="b", plate_number="闽C54321", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            assert new.key_id == 2
            assert client.verify(old.qr_text).verdict == pb.VERDICT_VALID  # retired key still verifies
            KeyDirectory(keys_dir).revoke(1)
            wait_for_key(client, 1, pb.KEY_STATUS_REVOKED)
            assert client.verify(old.qr_text).verdict == pb.VERDICT_REVOKED
            assert client.verify(new.qr_text).verdict == pb.VERDICT_VALID
    finally:
        server.stop(grace=1)


def test_revoking_the_active_key_voids_its_marks_and_stops_issuance(
    sqlite_url: str, keys_dir: Path, clock: MovableClock
) -> None:
    server = start_server(sqlite_url, keys_dir, clock)
    try:
        with VimarkClient(f"127.0.0.1:{server.port}") as client:
            client.upsert_vehicles([vehicle(registered_on="2026-11-02")])
            mark = client.issue(
                request_id="a", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            KeyDirectory(keys_dir).revoke(1)
            wait_for_key(client, 1, pb.KEY_STATUS_REVOKED)
            assert client.verify(mark.qr_text).verdict == pb.VERDICT_REVOKED
            with pytest.raises(FailedPrecondition) as refused:
                client.issue(
                    request_id="b", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REDOWNLOAD
                )
            assert refused.value.reason == "NO_ACTIVE_KEY"
            KeyDirectory(keys_dir).rotate()
            wait_for_key(client, 2, pb.KEY_STATUS_ACTIVE)
            fresh = client.issue(
                request_id="c", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REDOWNLOAD
            )
            assert fresh.key_id == 2 and client.verify(fresh.qr_text).verdict == pb.VERDICT_VALID
    finally:
        server.stop(grace=1)
