"""Write tests/vectors/offline/offline_v1.json: signed offline data for police terminals, made
with published TEST keys (never used by a server), for docs/offline-format.md and the tests.

    python tests/vectors/offline/generate.py

The TEST trust anchor and TEST online key are Ed25519 seeds derived from fixed strings below; the
issuing keys in the bundle are the certificate vectors' TEST keys (tests/vectors/test_keys.json).
Signatures are deterministic (Ed25519); the xz streams depend on the liblzma version, so the
tests check that the stored vectors verify and decode as stated, not that they regenerate byte
for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for vector_loader

import vector_loader  # noqa: E402

from vimark.client.domain import status_bits  # noqa: E402
from vimark.client.offline import StatusState, TrustBundle  # noqa: E402
from vimark.client.offline.envelope import (  # noqa: E402
    ONLINE_KEY,
    STATUS_DELTA,
    STATUS_SNAPSHOT,
    TRUST_BUNDLE,
    signed_bytes,
    timestamp,
)
from vimark.v1 import terminal_service_pb2 as tpb  # noqa: E402

OUT = HERE / "offline_v1.json"
MADE = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
ANCHOR_SEED = hashlib.sha256(b"vimark TEST trust anchor key: never trust it").digest()
ONLINE_SEED = hashlib.sha256(b"vimark TEST online key: never trust it").digest()
OTHER_ANCHOR_SEED = hashlib.sha256(b"vimark TEST another anchor").digest()
FIRST = 1234560  # the valid certificate vectors' serial is 1234567


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def certificate(anchor: Ed25519PrivateKey, online: Ed25519PrivateKey) -> tpb.SignedOnlineKey:
    key = tpb.OnlineKey(
        key_id=1,
        algorithm="Ed25519",
        public_key=raw(online),
        start_time=timestamp(MADE - dt.timedelta(days=1)),
        end_time=timestamp(MADE + dt.timedelta(days=90)),
    )
    data = key.SerializeToString(deterministic=True)
    return tpb.SignedOnlineKey(online_key=data, anchor_signature=anchor.sign(signed_bytes(ONLINE_KEY, data)))


def sign(online: Ed25519PrivateKey, cert: tpb.SignedOnlineKey, kind: str, payload: bytes) -> str:
    envelope = tpb.SignedEnvelope(payload=payload, signature=online.sign(signed_bytes(kind, payload)), signer=cert)
    return envelope.SerializeToString(deterministic=True).hex()


def altered(signed_hex: str) -> str:
    """The envelope with the last byte of its payload changed (one bit)."""
    envelope = tpb.SignedEnvelope.FromString(bytes.fromhex(signed_hex))
    envelope.payload = envelope.payload[:-1] + bytes([envelope.payload[-1] ^ 1])
    return envelope.SerializeToString(deterministic=True).hex()


def state(change_id: int, hotlist: dict[str, int]) -> StatusState:
    current = np.zeros(16, np.bool_)
    current[[3, 7, 12]] = True  # serials 1234563, 1234567 (valid_clear_v1's), 1234572 are current
    return StatusState.build(
        change_id=change_id,
        made_at=MADE,
        max_age=dt.timedelta(hours=24),
        first_serial=FIRST,
        current=current,
        revoked=frozenset({1234570}),
        unknown_vehicle=frozenset({1234561}),
        hotlist=hotlist,
        missing=frozenset({1234565}),  # taken but not committed when the store was read
    )


def main() -> None:
    anchor = Ed25519PrivateKey.from_private_bytes(ANCHOR_SEED)
    online = Ed25519PrivateKey.from_private_bytes(ONLINE_SEED)
    other = Ed25519PrivateKey.from_private_bytes(OTHER_ANCHOR_SEED)
    cert = certificate(anchor, online)
    bundle = TrustBundle(vector_loader.trust_list(), MADE, dt.timedelta(hours=72))
    bundle_payload = bundle.to_message().SerializeToString(deterministic=True)
    v1 = state(41, {"02:闽C54321": status_bits("C"), "52:闽CD12345": status_bits("J")})
    v2 = state(42, {"02:闽C54321": status_bits("C"), "02:闽C12345": status_bits("C")})  # 闽C12345 stolen
    snapshot_payload = v1.to_message().SerializeToString(deterministic=True)
    delta_payload = v1.delta_to(v2).SerializeToString(deterministic=True)
    data = {
        "name": "offline_v1",
        "description": "A trust bundle, a status snapshot (version 41) and a delta to version 42, each signed "
        "by the TEST online key that the TEST trust anchor certifies.",
        "provenance": "tests/vectors/offline/generate.py; TEST keys only: anchor and online seeds are SHA-256 of "
        "fixed strings in that file, the issuing keys are tests/vectors/test_keys.json's.",
        "made_time": MADE.isoformat(),
        "test_anchor_seed_hex": ANCHOR_SEED.hex(),
        "test_anchor_public_hex": raw(anchor).hex(),
        "test_online_seed_hex": ONLINE_SEED.hex(),
        "signed_bundle_hex": sign(online, cert, TRUST_BUNDLE, bundle_payload),
        "signed_snapshot_hex": sign(online, cert, STATUS_SNAPSHOT, snapshot_payload),
        "signed_delta_hex": sign(online, cert, STATUS_DELTA, delta_payload),
        "snapshot": {
            "change_id": 41,
            "first_serial": FIRST,
            "serial_count": 16,
            "current_serials": [1234563, 1234567, 1234572],
            "revoked_serials": [1234570],
            "unknown_vehicle_serials": [1234561],
            "missing_serials": [1234565],
            "hotlist": {"02:闽C54321": "C", "52:闽CD12345": "J"},
            "content_digest_hex": v1.digest().hex(),
        },
        "after_delta": {"change_id": 42, "content_digest_hex": v2.digest().hex()},
        "verdicts": [
            {"qr_vector": "valid_clear_v1", "hours_after_made": 1, "with": "snapshot", "verdict": "VALID"},
            {"qr_vector": "valid_sealed_v1", "hours_after_made": 1, "with": "snapshot", "verdict": "VALID"},
            {"qr_vector": "valid_clear_v1", "hours_after_made": 1, "with": "delta", "verdict": "VEHICLE_BLOCKED"},
            {"qr_vector": "valid_clear_v1", "hours_after_made": 25, "with": "snapshot", "verdict": "UNSPECIFIED"},
            {"qr_vector": "bitflip_signature", "hours_after_made": 100, "with": "snapshot", "verdict": "FORGED"},
        ],
        "refused": {
            "bundle_under_another_anchor": sign(online, certificate(other, online), TRUST_BUNDLE, bundle_payload),
            "altered_bundle": altered(sign(online, cert, TRUST_BUNDLE, bundle_payload)),
            "snapshot_offered_as_bundle": sign(online, cert, STATUS_SNAPSHOT, snapshot_payload),
        },
    }
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
