"""An independent reader of vimark QR texts, written from docs/certificate-format.md ALONE.

Nothing here comes from vimark: no codec, no generated protobuf module, no client. Base45 (RFC 9285,
with the strict rules of §2), the envelope (§3), the inner layout and signed message (§4), the
protobuf body (§5, wire format decoded by hand) and the verification steps 1-9 (§6) follow the
document; only the primitives (Ed25519, ChaCha20-Poly1305, HMAC-SHA256) come from pyca/cryptography.
tests/test_vectors_independent.py runs it over every published vector. Where the document leaves
something open, the choice made here is marked "UNSPECIFIED" below.

The few encoding helpers at the end (Base45 encoding, body serialisation, synthetic nonce, sealing)
exist only to check the document's determinism claims against the vectors; vimark never uses them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# -- constants, each from the section named ---------------------------------------------------------
MAX_TEXT = 1024  # §6 step 1, §7
PREFIX = "VM1:"  # §2
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"  # §2
SEALED, CLEAR = 0x01, 0x02  # §3
SEAL_HEADER = 15  # §3.1: type, seal key id, nonce
TAG = 16  # §3.1: Poly1305 tag
INNER_HEADER = 66  # §4: key id (2) and signature (64)
MARK_DOMAIN = b"vimark/v1/mark\0"  # §4
NONCE_DOMAIN = b"vimark/v1/nonce\0"  # §3.1
PLATE_TYPES = frozenset("01 02 03 04 05 06 07 08 13 14 15 16 20 21 22 23 24 26 27 51 52 99".split())  # §5, field 3
REASONS = range(1, 9)  # §5, field 7: 1 REGISTRATION ... 7 PAPER_LOST, 8 BACKFILL
PRESENTATIONS = range(1, 4)  # §5, field 8: 1 ONLINE, 2 OFFLINE, 3 PRINT
FIRST_MONTH, LAST_MONTH = 1950 * 12, 2199 * 12 + 11  # §5, field 5: 23400 ... 26399
LAST_DAY = (dt.date(2199, 12, 31) - dt.date(1970, 1, 1)).days  # §5, field 10: 84005
CHINA = dt.timezone(dt.timedelta(hours=8), "CST")  # §5 field 5: China time is UTC+08:00, no DST
FIRST_ISSUED_AT = int(dt.datetime(1950, 1, 1, tzinfo=CHINA).timestamp())  # §5: 1950-01-01 00:00 China time
LAST_ISSUED_AT = int(dt.datetime(2199, 12, 31, 23, 59, 59, tzinfo=CHINA).timestamp())
RETIREMENT_SKEW = dt.timedelta(minutes=5)  # §6 step 9b

# The verdicts of §6 and the step that gives each rejection.
MALFORMED, UNKNOWN_KEY, FORGED, REVOKED = "MALFORMED", "UNKNOWN_KEY", "FORGED", "REVOKED"
STEP_VERDICTS: dict[str, str] = {
    "1": MALFORMED,
    "2": MALFORMED,
    "3": MALFORMED,
    "4a": MALFORMED,
    "4b": MALFORMED,
    "4c": UNKNOWN_KEY,
    "4d": FORGED,
    "5": MALFORMED,
    "6": MALFORMED,
    "7": UNKNOWN_KEY,
    "8": FORGED,
    "9a": REVOKED,
    "9b": FORGED,
}


class Rejected(Exception):
    """The text failed step `step` of §6; `verdict` is that step's verdict."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step}: {message}")
        self.step = step
        self.verdict = STEP_VERDICTS[step]
        self.message = message


class BadWire(ValueError):
    """Base45 or protobuf bytes that do not decode."""


# -- §2 Base45 ---------------------------------------------------------------------------------------
def b45decode(text: str) -> bytes:
    """Strict RFC 9285 Base45: no character outside the alphabet, no length ≡ 1 (mod 3), no triple
    above 65535, no final pair above 255."""
    if len(text) % 3 == 1:
        raise BadWire(f"Base45 length {len(text)} is 1 (mod 3)")
    values = []
    for char in text:
        index = ALPHABET.find(char)
        if index < 0:
            raise BadWire(f"{char!r} is not a Base45 character")
        values.append(index)
    out = bytearray()
    for start in range(0, len(values), 3):
        chunk = values[start : start + 3]
        if len(chunk) == 3:
            n = chunk[0] + 45 * chunk[1] + 2025 * chunk[2]
            if n > 0xFFFF:
                raise BadWire(f"Base45 triple worth {n} > 65535")
            out += n.to_bytes(2, "big")
        else:
            n = chunk[0] + 45 * chunk[1]
            if n > 0xFF:
                raise BadWire(f"final Base45 pair worth {n} > 255")
            out.append(n)
    return bytes(out)


def b45encode(data: bytes) -> str:
    out = []
    for start in range(0, len(data), 2):
        pair = data[start : start + 2]
        if len(pair) == 2:
            n = pair[0] * 256 + pair[1]
            out += [n % 45, (n // 45) % 45, n // 2025]
        else:
            out += [pair[0] % 45, pair[0] // 45]
    return "".join(ALPHABET[i] for i in out)


# -- §5 the body: protobuf wire format by hand -------------------------------------------------------
VARINT, I64, LEN, I32 = 0, 1, 2, 5  # protobuf wire types (groups, 3 and 4, are not accepted)


@dataclass(frozen=True)
class Body:
    """vimark.v1.CertificateBody as §5 lists it: proto field names, proto values (plate_type a number)."""

    serial: int = 0
    plate_number: str = ""
    plate_type: int = 0
    vin: str = ""
    valid_until_month: int = 0
    issued_at: int = 0
    reason: int = 0
    presentation: int = 0
    presentation_expires_at: int = 0
    valid_from_day: int = 0


# field number -> (name, proto type), from the table of §5
FIELDS: dict[int, tuple[str, str]] = {
    1: ("serial", "uint64"),
    2: ("plate_number", "string"),
    3: ("plate_type", "uint32"),
    4: ("vin", "string"),
    5: ("valid_until_month", "uint32"),
    6: ("issued_at", "int64"),
    7: ("reason", "enum"),
    8: ("presentation", "enum"),
    9: ("presentation_expires_at", "int64"),
    10: ("valid_from_day", "uint32"),
}


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position). At most 10 bytes and below 2^64 (UNSPECIFIED, see parse_body)."""
    value = 0
    for i in range(10):
        if pos + i >= len(data):
            raise BadWire("varint runs past the end")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 64:
                raise BadWire("varint above 2^64 - 1")
            return value, pos + i + 1
    raise BadWire("varint longer than 10 bytes")


def _scalar(kind: str, raw: int) -> int:
    """A varint as the proto3 type reads it (protobuf casts an out-of-range value as C++ would)."""
    if kind == "uint64":
        return raw
    if kind == "uint32":
        return raw & 0xFFFF_FFFF
    if kind == "int64":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    # enum: int32
    raw &= 0xFFFF_FFFF
    return raw - (1 << 32) if raw >= 1 << 31 else raw


def parse_body(data: bytes) -> Body:
    """Protobuf bytes -> Body, checking the wire format only (the checks of form are body_errors').

    UNSPECIFIED in the document (§5 says only "proto3" and "does not parse"); chosen here:
    * as protobuf parsers do: a scalar field that occurs twice keeps its last value, and an unknown
      field number (varint, fixed32, fixed64 or length-delimited) is skipped;
    * stricter than protobuf parsers (which keep such fields as unknown fields or truncate): a known
      field number with the wrong wire type, a group (wire types 3 and 4) and a varint above 2^64 - 1
      are refused as bad wire format.
    No vector exercises any of these.
    """
    values: dict[str, Any] = {}
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFF_FFFF:
            raise BadWire(f"field number {number}")
        field = FIELDS.get(number)
        if wire == VARINT:
            raw, pos = read_varint(data, pos)
            value: object = raw
        elif wire == LEN:
            length, pos = read_varint(data, pos)
            if length > len(data) - pos:
                raise BadWire(f"field {number}: length {length} runs past the end")
            value, pos = data[pos : pos + length], pos + length
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if size > len(data) - pos:
                raise BadWire(f"field {number}: fixed{size * 8} runs past the end")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise BadWire(f"field {number}: wire type {wire}")
        if field is None:
            continue  # unknown field: skipped
        name, kind = field
        if kind == "string":
            if wire != LEN:
                raise BadWire(f"{name}: wire type {wire}, not length-delimited")
            assert isinstance(value, bytes)
            try:
                values[name] = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadWire(f"{name} is not UTF-8") from exc
        else:
            if wire != VARINT:
                raise BadWire(f"{name}: wire type {wire}, not varint")
            assert isinstance(value, int)
            values[name] = _scalar(kind, value)
    return Body(**values)


def body_errors(body: Body) -> list[str]:
    """The checks of form of §5 / §6 step 6; an empty list when the body passes."""
    errors = []
    if body.serial == 0:
        errors.append("no serial")
    if not body.plate_number:
        errors.append("no plate")
    if f"{body.plate_type:02d}" not in PLATE_TYPES:
        errors.append(f"plate type {body.plate_type} is not a known one")
    if body.reason not in REASONS:
        errors.append(f"issue reason {body.reason} is not a known one")
    if body.presentation not in PRESENTATIONS:
        errors.append(f"presentation {body.presentation} is not a known one")
    if not FIRST_MONTH <= body.valid_until_month <= LAST_MONTH:
        errors.append(f"valid_until_month {body.valid_until_month} is outside 1950-01 ... 2199-12")
    if body.valid_from_day > LAST_DAY:
        errors.append(f"valid_from_day {body.valid_from_day} is after 2199-12-31")
    if not FIRST_ISSUED_AT <= body.issued_at <= LAST_ISSUED_AT:
        errors.append(f"issued_at {body.issued_at} is outside 1950-01-01 ... 2199-12-31 China time")
    return errors


# -- §3, §4 envelope and inner -----------------------------------------------------------------------
def signed_message(key_id: int, body: bytes) -> bytes:
    """§4: "vimark/v1/mark\\0" || key_id (u16 BE) || body."""
    return MARK_DOMAIN + key_id.to_bytes(2, "big") + body


@dataclass(frozen=True)
class Opened:
    """What steps 1-5 give: the envelope taken apart, the seal (if any) opened."""

    envelope: bytes
    sealed: bool
    seal_key_id: int | None
    nonce: bytes | None
    key_id: int
    signature: bytes
    body_bytes: bytes

    @property
    def signed_message(self) -> bytes:
        return signed_message(self.key_id, self.body_bytes)


@dataclass(frozen=True)
class Decoded:
    """What decode (steps 1-6) gives: the opened envelope and the parsed, well-formed body."""

    opened: Opened
    body: Body


def open_text(text: str, seal_keys: Mapping[int, bytes]) -> Opened:
    """Steps 1-5 of §6."""
    if len(text) > MAX_TEXT:  # 1
        raise Rejected("1", f"{len(text)} characters > {MAX_TEXT}")
    if not text.startswith(PREFIX):  # 2
        raise Rejected("2", f"text does not start with {PREFIX}")
    try:  # 3
        envelope = b45decode(text[len(PREFIX) :])
    except BadWire as exc:
        raise Rejected("3", str(exc)) from exc
    if not envelope:
        raise Rejected("3", "nothing after the prefix")
    kind = envelope[0]
    if kind == SEALED:
        if len(envelope) < SEAL_HEADER + TAG:  # 4b
            raise Rejected("4b", f"sealed envelope of {len(envelope)} bytes < {SEAL_HEADER + TAG}")
        seal_key_id = int.from_bytes(envelope[1:3], "big")
        nonce = envelope[3:SEAL_HEADER]
        seal_key = seal_keys.get(seal_key_id)
        if seal_key is None:  # 4c
            raise Rejected("4c", f"seal key {seal_key_id} is not in the trust list")
        aad = PREFIX.encode("ascii") + envelope[:SEAL_HEADER]
        try:  # 4d
            inner = ChaCha20Poly1305(seal_key).decrypt(nonce, envelope[SEAL_HEADER:], aad)
        except InvalidTag as exc:
            raise Rejected("4d", "the seal does not open") from exc
        sealed, opened_seal_key_id, opened_nonce = True, seal_key_id, nonce
    elif kind == CLEAR:
        inner = envelope[1:]
        sealed, opened_seal_key_id, opened_nonce = False, None, None
    else:  # 4a
        raise Rejected("4a", f"envelope type 0x{kind:02x}")
    if len(inner) <= INNER_HEADER:  # 5
        raise Rejected("5", f"inner of {len(inner)} bytes: certificate is truncated")
    return Opened(
        envelope=envelope,
        sealed=sealed,
        seal_key_id=opened_seal_key_id,
        nonce=opened_nonce,
        key_id=int.from_bytes(inner[:2], "big"),
        signature=inner[2:INNER_HEADER],
        body_bytes=inner[INNER_HEADER:],
    )


def decode(text: str, seal_keys: Mapping[int, bytes]) -> Decoded:
    """Steps 1-6 of §6."""
    opened = open_text(text, seal_keys)
    try:  # 6
        body = parse_body(opened.body_bytes)
    except BadWire as exc:
        raise Rejected("6", f"body does not parse: {exc}") from exc
    errors = body_errors(body)
    if errors:
        raise Rejected("6", "; ".join(errors))
    return Decoded(opened, body)


# -- §6 steps 7-9 and §8 keys ------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustedKey:
    key_id: int
    public_key: bytes  # raw 32-byte Ed25519 public key
    valid_until: dt.datetime | None
    status: str  # active / retired / revoked


@dataclass(frozen=True)
class TrustList:
    keys: Mapping[int, TrustedKey]
    seal_keys: Mapping[int, bytes]


def authenticate(text: str, trust: TrustList) -> Decoded:
    """Steps 1-9 of §6; returns the decoded certificate or raises Rejected."""
    decoded = decode(text, trust.seal_keys)
    opened, body = decoded.opened, decoded.body
    key = trust.keys.get(opened.key_id)
    if key is None:  # 7
        raise Rejected("7", f"signing key {opened.key_id} is not in the trust list")
    try:  # 8
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(opened.signature, opened.signed_message)
    except InvalidSignature as exc:
        raise Rejected("8", "the signature does not verify") from exc
    if key.status == "revoked":  # 9a
        raise Rejected("9a", f"signing key {key.key_id} is revoked")
    if key.valid_until is not None:  # 9b
        stamped = dt.datetime.fromtimestamp(body.issued_at, dt.UTC)
        if stamped > key.valid_until + RETIREMENT_SKEW:
            raise Rejected("9b", f"stamped {stamped} after the key stopped signing at {key.valid_until}")
    return decoded


# -- encoding, only to check the document's determinism claims ---------------------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 / enum values: ten bytes, two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_body(body: Body) -> bytes:
    """§5: fields in field-number order, default values (0, empty string) omitted."""
    out = bytearray()
    for number, (name, kind) in sorted(FIELDS.items()):
        value = getattr(body, name)
        if not value:
            continue
        if kind == "string":
            data = value.encode("utf-8")
            out += _varint(number << 3 | LEN) + _varint(len(data)) + data
        else:
            out += _varint(number << 3 | VARINT) + _varint(value)
    return bytes(out)


def synthetic_nonce(seal_key: bytes, inner: bytes) -> bytes:
    """§3.1: HMAC-SHA256(seal_key, "vimark/v1/nonce\\0" || inner)[0:12]."""
    return hmac.new(seal_key, NONCE_DOMAIN + inner, hashlib.sha256).digest()[:12]


def encode_text(key_id: int, signature: bytes, body: bytes, seal: tuple[int, bytes] | None) -> str:
    """§1: the QR text of a signed body, sealed under (seal key id, key) or clear when seal is None."""
    inner = key_id.to_bytes(2, "big") + signature + body
    if seal is None:
        return PREFIX + b45encode(bytes([CLEAR]) + inner)
    seal_key_id, seal_key = seal
    header = bytes([SEALED]) + seal_key_id.to_bytes(2, "big") + synthetic_nonce(seal_key, inner)
    sealed = ChaCha20Poly1305(seal_key).encrypt(header[3:], inner, PREFIX.encode("ascii") + header)
    return PREFIX + b45encode(header + sealed)
