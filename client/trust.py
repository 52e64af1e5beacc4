"""The trust list and the authenticity check shared by the server and offline terminals.

`TrustList.authenticate` answers "is this QR a genuine vimark certificate?" (form, seal,
key, signature); whether the mark is *current and valid* needs the server's index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vimark.client.certificate import Certificate, ForgedCertificate, UnknownKey, decode
from vimark.client.errors import CertificateError

ACTIVE, RETIRED, REVOKED = "active", "retired", "revoked"
ALGORITHM = "Ed25519"
# A mark stamped later than its key's retirement (beyond clock skew) was not made by vimark.
RETIREMENT_SKEW = dt.timedelta(minutes=5)


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


@dataclass(frozen=True)
class TrustList:
    keys: Mapping[int, TrustedKey]
    seal_keys: Mapping[int, bytes]
    _verifiers: dict[int, Ed25519PublicKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = {i: Ed25519PublicKey.from_public_bytes(k.public_key) for i, k in self.keys.items()}
        object.__setattr__(self, "_verifiers", parsed)

    def authenticate(self, qr_text: str) -> Certificate:
        """Steps 1-6 are decode()'s; then 7 the key, 8 the signature, 9 the key's life.
        Raises MalformedCertificate, UnknownKey, ForgedCertificate or RevokedKey."""
        certificate = decode(qr_text, self.seal_keys)
        # 7. A key we know.
        key = self.keys.get(certificate.key_id)
        if key is None:
            raise UnknownKey(f"signed by unknown key {certificate.key_id}")
        # 8. The signature over the domain-separated body.
        try:
            self._verifiers[certificate.key_id].verify(certificate.signature, certificate.signed_message)
        except InvalidSignature:
            raise ForgedCertificate("the signature does not verify") from None
        # 9. The key's life: revoked keys void their marks; a retired key signs nothing new.
        if key.status == REVOKED:
            raise RevokedKey(f"signing key {key.key_id} has been revoked")
        if key.valid_until is not None and certificate.body.issued_at > (key.valid_until + RETIREMENT_SKEW).timestamp():
            raise ForgedCertificate(f"stamped after key {key.key_id} stopped signing")
        return certificate
