"""The one helper that loads the certificate test vectors (tests/vectors/*.json) and their TEST KEYS.

The vectors and test_keys.json are written by tests/vectors/generate.py; the keys in them are
published test keys, never used by a server.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vimark.client.certificate import (
    CertificateBody,
    ForgedCertificate,
    MalformedCertificate,
    UnknownKey,
    encode,
    signed_message,
)
from vimark.client.errors import CertificateError
from vimark.client.trust import RevokedKey, TrustedKey, TrustList

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
KEYS_FILE = VECTORS_DIR / "test_keys.json"
GENERATOR = VECTORS_DIR / "generate.py"

VALID = "VALID"
# The verdict named by a vector's expected outcome -> the exact exception authenticate() raises.
ERRORS: dict[str, type[CertificateError]] = {
    "MALFORMED": MalformedCertificate,
    "UNKNOWN_KEY": UnknownKey,
    "FORGED": ForgedCertificate,
    "REVOKED": RevokedKey,
}


@dataclass(frozen=True)
class Vector:
    """One test vector: a QR text, the trust list to check it against, and what must happen."""

    name: str
    description: str
    provenance: str
    qr_text: str
    trust_list: str
    outcome: str  # VALID or a verdict name (a key of ERRORS)
    error: str | None  # the exception class name, None when VALID
    raw: dict[str, Any]

    @property
    def valid(self) -> bool:
        return self.outcome == VALID

    @property
    def error_class(self) -> type[CertificateError]:
        return ERRORS[self.outcome]

    # The fields below exist for VALID vectors only.
    @property
    def body(self) -> CertificateBody:
        return CertificateBody(**self.raw["body"])

    @property
    def body_bytes(self) -> bytes:
        return bytes.fromhex(self.raw["body_hex"])

    @property
    def signed_message(self) -> bytes:
        return bytes.fromhex(self.raw["signed_message_hex"])

    @property
    def signature(self) -> bytes:
        return bytes.fromhex(self.raw["signature_hex"])

    @property
    def key_id(self) -> int:
        return int(self.raw["key_id"])

    @property
    def seal_key_id(self) -> int | None:
        seal: int | None = self.raw["seal_key_id"]
        return seal

    @property
    def sealed(self) -> bool:
        return bool(self.raw["sealed"])

    @property
    def qr_version_m(self) -> int:
        return int(self.raw["sizes"]["qr_version_m"])

    # For invalid vectors made from a signed body: that body and its signature, as recorded.
    @property
    def made_from_body(self) -> CertificateBody:
        return CertificateBody(**self.raw["made_from"]["body"])

    @property
    def made_from_body_bytes(self) -> bytes:
        return bytes.fromhex(self.raw["made_from"]["body_hex"])

    @property
    def made_from_signed_message(self) -> bytes:
        return bytes.fromhex(self.raw["made_from"]["signed_message_hex"])

    @property
    def made_from_signature(self) -> bytes:
        return bytes.fromhex(self.raw["made_from"]["signature_hex"])


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@cache
def load_vectors() -> tuple[Vector, ...]:
    """Every vector, in file-name order."""
    vectors = []
    for path in sorted(VECTORS_DIR.glob("*.json")):
        if path == KEYS_FILE:
            continue
        data = _read(path)
        vectors.append(
            Vector(
                name=data["name"],
                description=data["description"],
                provenance=data["provenance"],
                qr_text=data["qr_text"],
                trust_list=data["trust_list"],
                outcome=data["expected"]["outcome"],
                error=data["expected"]["error"],
                raw=data,
            )
        )
    return tuple(vectors)


def load_vector(name: str) -> Vector:
    return next(v for v in load_vectors() if v.name == name)


@cache
def _keys() -> dict[str, Any]:
    return _read(KEYS_FILE)


def signing_seed(name: str = "test") -> bytes:
    """The 32-byte Ed25519 seed of a named TEST key ("test" is trusted as key 1, "wrong" by nobody)."""
    return bytes.fromhex(next(k["seed_hex"] for k in _keys()["signing_keys"] if k["name"] == name))


def seal_key(name: str = "test") -> tuple[int, bytes]:
    """(seal key id, 32-byte key) of a named TEST seal key ("test" is trusted, "unknown" is not)."""
    key = next(k for k in _keys()["seal_keys"] if k["name"] == name)
    return int(key["seal_key_id"]), bytes.fromhex(key["key_hex"])


def trust_list(name: str = "default") -> TrustList:
    """A TrustList built from the named trust list in test_keys.json (default, key1_retired, key1_revoked)."""
    spec = _keys()["trust_lists"][name]
    keys = [TrustedKey.from_json(item) for item in spec["keys"]]
    seals = {int(i): bytes.fromhex(k) for i, k in spec["seal_keys"].items()}
    return TrustList({k.key_id: k for k in keys}, seals)


def trust_list_with(status: str, valid_until: dt.datetime | None) -> TrustList:
    """The default trust list with test key 1's status and valid_until replaced."""
    base = trust_list()
    key = base.keys[1]
    changed = TrustedKey(key.key_id, key.public_key, key.valid_from, valid_until, status)
    return TrustList({1: changed}, base.seal_keys)


def issue(body: CertificateBody, *, key_id: int = 1, signer: str = "test", sealed: bool = True) -> str:
    """Sign and (by default) seal a body with the TEST keys, exactly as the issuer does."""
    body_bytes = body.to_bytes()
    signature = Ed25519PrivateKey.from_private_bytes(signing_seed(signer)).sign(signed_message(key_id, body_bytes))
    return encode(body_bytes, key_id, signature, seal_key() if sealed else None)
