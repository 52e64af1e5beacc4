"""Base45 (RFC 9285): bytes as text in the QR alphanumeric alphabet, 3 characters per 2 bytes."""

from __future__ import annotations

from vimark.client.errors import CertificateError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}


def b45encode(data: bytes) -> str:
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        out += (ALPHABET[n % 45], ALPHABET[n // 45 % 45], ALPHABET[n // 2025])
    if len(data) % 2:
        n = data[-1]
        out += (ALPHABET[n % 45], ALPHABET[n // 45])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Strict decoding: any character outside the alphabet, a dangling character or an
    out-of-range triple is an error (a lenient decoder would let altered texts through)."""
    if len(text) % 3 == 1:
        raise CertificateError(f"Base45 text of length {len(text)} cannot be complete")
    try:
        values = [_VALUE[c] for c in text]
    except KeyError as exc:
        raise CertificateError(f"character {exc.args[0]!r} is not in the Base45 alphabet") from None
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        n = sum(v * 45**k for k, v in enumerate(chunk))
        if len(chunk) == 3:
            if n > 0xFFFF:
                raise CertificateError(f"Base45 triple at {i} is out of range")
            out += n.to_bytes(2, "big")
        else:
            if n > 0xFF:
                raise CertificateError("Base45 final pair is out of range")
            out.append(n)
    return bytes(out)
