"""The trust list and the authenticity check shared by the server and offline terminals.

`TrustList.authenticate` answers "is this QR a genuine vimark certificate?" (form, seal,
key, signature); whether the mark is *current and valid* needs the server's index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from vimark.client.certificate import Certificate, ForgedCertificate, UnknownKey, decode
from vimark.client.errors import CertificateError
from vimark.v1 import mark_service_pb2

KeyStatus = mark_service_pb2.KeyStatus


def key_status_name(value: int) -> str:
    """A KeyStatus as the key directory and `vimark keys list` write it: active, retired, revoked."""
    return KeyStatus.Name(value).removeprefix("KEY_STATUS_").lower()  # type: ignore[arg-type]


def key_status_value(name: str) -> int:
    return KeyStatus.Value("KEY_STATUS_" + name.upper())


ACTIVE = key_status_name(KeyStatus.KEY_STATUS_ACTIVE)
RETIRED = key_status_name(KeyStatus.KEY_STATUS_RETIRED)
REVOKED = key_status_name(KeyStatus.KEY_STATUS_REVOKED)
ALGORITHM = "Ed25519"
# A mark stamped later than its key's retirement (beyond clock skew) was not made by vimark.
RETIREMENT_SKEW = dt.timedelta(minutes=5)
PUBLIC_KEY_SIZE = 32

# Step 8 is pluggable: (public key, signature, message) -> authentic? The server passes one that
# batches; an offline terminal uses verify_signature directly.
SignatureCheck = Callable[[bytes, bytes, bytes], bool]


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 through libsodium (PyNaCl): the fastest verify measured here (load/ed25519_candidates.py,
    about twice cryptography's rate), and it releases the GIL. Refuses non-canonical signatures."""
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


class RevokedKey(CertificateError):
    """Signed by a key that has been revoked (the REVOKED verdict)."""

    reason = "REVOKED"


@dataclass(frozen=True)
class TrustedKey:
    key_id: int
    public_key: bytes  # raw 32 bytes
    valid_from: dt.datetime
    valid_until: dt.datetime | None  # when it stopped signing; None while active
    status: str

    def as_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "algorithm": ALGORITHM,
            "public_key": self.public_key.hex(),
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, item: Mapping[str, object]) -> TrustedKey:
        until = item.get("valid_until")
        return cls(
            key_id=int(str(item["key_id"])),
            public_key=bytes.fromhex(str(item["public_key"])),
            valid_from=dt.datetime.fromisoformat(str(item["valid_from"])),
            valid_until=dt.datetime.fromisoformat(str(until)) if until else None,
            status=str(item["status"]),
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """A decoded certificate and the trusted key it names (steps 1-7): its signature is not checked yet."""

    certificate: Certificate
    key: TrustedKey
    signed_message: bytes

    @property
    def signed(self) -> tuple[bytes, bytes, bytes]:
        """What step 8 checks: (public key, signature, message)."""
        return self.key.public_key, self.certificate.signature, self.signed_message

    def conclude(self, authentic: bool) -> Certificate:
        """Steps 8 and 9, given step 8's answer. Raises ForgedCertificate or RevokedKey."""
        # 8. The signature over the domain-separated body.
        if not authentic:
            raise ForgedCertificate("the signature does not verify")
        # 9. The key's life: revoked keys void their marks; a retired key signs nothing new.
        key, certificate = self.key, self.certificate
        if key.status == REVOKED:
            raise RevokedKey(f"signing key {key.key_id} has been revoked")
        if key.valid_until is not None and certificate.body.issued_at > (key.valid_until + RETIREMENT_SKEW).timestamp():
            raise ForgedCertificate(f"stamped after key {key.key_id} stopped signing")
        return certificate


@dataclass(frozen=True)
class TrustList:
    keys: Mapping[int, TrustedKey]
    seal_keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        for key in self.keys.values():
            if len(key.public_key) != PUBLIC_KEY_SIZE:
                raise ValueError(f"key {key.key_id}: an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")

    def authenticate(self, qr_text: str, check: SignatureCheck = verify_signature) -> Certificate:
        """Steps 1-6 are decode()'s; then 7 the key, 8 the signature (through `check`), 9 the key's life.
        Raises MalformedCertificate, UnknownKey, ForgedCertificate or RevokedKey."""
        claim = self.claim(qr_text)
        return claim.conclude(check(*claim.signed))

    def claim(self, qr_text: str) -> Claim:
        """Steps 1-7, so that step 8 can be batched: the caller checks `claim.signed`, then calls
        `claim.conclude(answer)`. Raises MalformedCertificate, UnknownKey or ForgedCertificate (the seal)."""
        certificate = decode(qr_text, self.seal_keys)
        # 7. A key we know.
        key = self.keys.get(certificate.key_id)
        if key is None:
            raise UnknownKey(f"signed by unknown key {certificate.key_id}")
        return Claim(certificate, key, certificate.signed_message)
