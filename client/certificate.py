"""The vimark certificate: what a QR carries, and the one codec both server and terminals use.

    text     = "VM1:" + Base45(envelope)
    envelope = 0x01 | seal_key_id (u16) | nonce (12) | ChaCha20-Poly1305(inner)   sealed (default)
             | 0x02 | inner                                                     clear
    inner    = key_id (u16) | Ed25519 signature (64) | body (protobuf vimark.v1.CertificateBody)
    signed   = b"vimark/v1/mark\\0" | key_id (u16) | body

docs/certificate-format.md is the specification, with test vectors. Decoding here checks the
form and opens the seal; the signature is checked by whoever holds the trust list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from google.protobuf.message import DecodeError

from vimark.client.base45 import b45decode, b45encode
from vimark.client.domain import CHINA_TIME, FIRST_YEAR, LAST_YEAR, PLATE_TYPES, Month, china_date, format_month
from vimark.client.errors import CertificateError
from vimark.v1 import certificate_pb2

PREFIX = "VM1:"
EPOCH_DAY = dt.date(1970, 1, 1)
FIRST_MONTH, LAST_MONTH = FIRST_YEAR * 12, LAST_YEAR * 12 + 11
LAST_DAY = (dt.date(LAST_YEAR, 12, 31) - EPOCH_DAY).days
# issued_at must be an instant in those years (China time), so issued_time and valid_from always exist.
FIRST_INSTANT = int(dt.datetime(FIRST_YEAR, 1, 1, tzinfo=CHINA_TIME).timestamp())
LAST_INSTANT = int(dt.datetime(LAST_YEAR + 1, 1, 1, tzinfo=CHINA_TIME).timestamp()) - 1
MAX_QR_TEXT_LENGTH = 1024  # refused before decoding; real certificates are about 230 characters
SIGNATURE_DOMAIN = b"vimark/v1/mark\x00"
NONCE_DOMAIN = b"vimark/v1/nonce\x00"
SEALED, CLEAR = 0x01, 0x02
SIGNATURE_SIZE, NONCE_SIZE, TAG_SIZE = 64, 12, 16
_INNER_HEADER = struct.Struct(">H64s")
_SEAL_HEADER = struct.Struct(">BH12s")

IssueReason = certificate_pb2.IssueReason
Presentation = certificate_pb2.Presentation
REASONS = frozenset(IssueReason.values()[1:])  # every named value but _UNSPECIFIED
PRESENTATIONS = frozenset(Presentation.values()[1:])


class MalformedCertificate(CertificateError):
    """Not a vimark certificate at all (the MALFORMED verdict)."""

    reason = "MALFORMED"


class UnknownKey(CertificateError):
    """Names a signing or seal key vimark does not know (the UNKNOWN_KEY verdict)."""

    reason = "UNKNOWN_KEY"


class ForgedCertificate(CertificateError):
    """A seal or signature that does not verify (the FORGED verdict)."""

    reason = "FORGED"


@dataclass(frozen=True)
class CertificateBody:
    """The signed fields, checked for form when decoded."""

    serial: int
    plate_number: str
    plate_type: str  # two-digit GA 24.7 code
    vin: str
    valid_until: Month
    issued_at: int  # Unix seconds
    reason: int  # IssueReason
    presentation: int  # Presentation
    presentation_expires_at: int = 0  # Unix seconds, live QRs only
    valid_from_day: int = 0  # days since 1970-01-01: the first day this validity is attested; 0 = issue day

    def to_bytes(self) -> bytes:
        return certificate_pb2.CertificateBody(
            serial=self.serial,
            plate_number=self.plate_number,
            plate_type=int(self.plate_type),
            vin=self.vin,
            valid_until_month=self.valid_until,
            issued_at=self.issued_at,
            reason=self.reason,  # type: ignore[arg-type]
            presentation=self.presentation,  # type: ignore[arg-type]
            presentation_expires_at=self.presentation_expires_at,
            valid_from_day=self.valid_from_day,
        ).SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> CertificateBody:
        message = certificate_pb2.CertificateBody()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise MalformedCertificate(f"certificate body does not parse: {exc}") from None
        plate_type = f"{message.plate_type:02d}"
        if plate_type not in PLATE_TYPES or not message.serial or not message.plate_number:
            raise MalformedCertificate("certificate body lacks a serial, a plate or a known plate type")
        if message.reason not in REASONS or message.presentation not in PRESENTATIONS:
            raise MalformedCertificate("certificate body names an unknown issue reason or presentation")
        if not (
            FIRST_MONTH <= message.valid_until_month <= LAST_MONTH
            and message.valid_from_day <= LAST_DAY
            and FIRST_INSTANT <= message.issued_at <= LAST_INSTANT
        ):
            raise MalformedCertificate("certificate body has a validity outside the years vimark serves")
        return cls(
            serial=message.serial,
            plate_number=message.plate_number,
            plate_type=plate_type,
            vin=message.vin,
            valid_until=message.valid_until_month,
            issued_at=message.issued_at,
            reason=message.reason,
            presentation=message.presentation,
            presentation_expires_at=message.presentation_expires_at,
            valid_from_day=message.valid_from_day,
        )

    @property
    def valid_until_text(self) -> str:
        return format_month(self.valid_until)

    @property
    def issued_time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.issued_at, dt.UTC)

    @property
    def valid_from(self) -> dt.date:
        """The first day this mark attests validity (the day the validity was granted)."""
        if self.valid_from_day:
            return EPOCH_DAY + dt.timedelta(days=self.valid_from_day)
        return china_date(self.issued_time)


@dataclass(frozen=True)
class Certificate:
    """A decoded certificate whose signature is not yet checked."""

    key_id: int
    signature: bytes
    body_bytes: bytes
    body: CertificateBody
    sealed: bool

    @property
    def signed_message(self) -> bytes:
        return signed_message(self.key_id, self.body_bytes)


def signed_message(key_id: int, body_bytes: bytes) -> bytes:
    """What the issuing key signs: domain-separated so no other vimark signature can pass for it."""
    return SIGNATURE_DOMAIN + struct.pack(">H", key_id) + body_bytes


def encode(body_bytes: bytes, key_id: int, signature: bytes, seal: tuple[int, bytes] | None) -> str:
    """Assemble the QR text; `seal` is (seal_key_id, 32-byte key), or None for a clear certificate."""
    if len(signature) != SIGNATURE_SIZE or not 0 <= key_id <= 0xFFFF:
        raise ValueError(f"an Ed25519 signature is {SIGNATURE_SIZE} bytes and a key id fits 16 bits")
    inner = _INNER_HEADER.pack(key_id, signature) + body_bytes
    if seal is None:
        return PREFIX + b45encode(bytes([CLEAR]) + inner)
    seal_key_id, key = seal
    # A synthetic nonce (a MAC of the plaintext) makes sealing deterministic: the same mark always
    # gives the same text, so test vectors are reproducible and a nonce is never reused for two texts.
    nonce = hmac.new(key, NONCE_DOMAIN + inner, hashlib.sha256).digest()[:NONCE_SIZE]
    header = _SEAL_HEADER.pack(SEALED, seal_key_id, nonce)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, inner, PREFIX.encode() + header)
    return PREFIX + b45encode(header + sealed)


def decode(text: str, seal_keys: Mapping[int, bytes]) -> Certificate:
    """Steps: 1 bound the size, 2 check the prefix, 3 Base45, 4 open the seal, 5 split, 6 parse the body."""
    # 1. Refuse oversize input before any work.
    if len(text) > MAX_QR_TEXT_LENGTH:
        raise MalformedCertificate(f"QR text of {len(text)} characters exceeds {MAX_QR_TEXT_LENGTH}")
    # 2. The version prefix.
    if not text.startswith(PREFIX):
        raise MalformedCertificate(f"QR text does not start with {PREFIX!r}")
    # 3. Base45.
    try:
        envelope = b45decode(text[len(PREFIX) :])
    except CertificateError as exc:
        raise MalformedCertificate(exc.message) from None
    if not envelope:
        raise MalformedCertificate("empty certificate")
    # 4. The seal.
    kind = envelope[0]
    if kind == SEALED:
        if len(envelope) < _SEAL_HEADER.size + TAG_SIZE:
            raise MalformedCertificate("sealed certificate is truncated")
        _, seal_key_id, nonce = _SEAL_HEADER.unpack_from(envelope)
        key = seal_keys.get(seal_key_id)
        if key is None:
            raise UnknownKey(f"sealed with unknown seal key {seal_key_id}")
        header = envelope[: _SEAL_HEADER.size]
        try:
            inner = ChaCha20Poly1305(key).decrypt(nonce, envelope[_SEAL_HEADER.size :], PREFIX.encode() + header)
        except InvalidTag:
            raise ForgedCertificate("the seal does not verify: the certificate was altered") from None
    elif kind == CLEAR:
        inner = envelope[1:]
    else:
        raise MalformedCertificate(f"unknown envelope type {kind:#04x}")
    # 5. Key id, signature, body.
    if len(inner) <= _INNER_HEADER.size:
        raise MalformedCertificate("certificate is truncated")
    key_id, signature = _INNER_HEADER.unpack_from(inner)
    body_bytes = inner[_INNER_HEADER.size :]
    # 6. The body's form (its truth is the signature's job).
    body = CertificateBody.from_bytes(body_bytes)
    return Certificate(key_id, signature, body_bytes, body, sealed=kind == SEALED)
