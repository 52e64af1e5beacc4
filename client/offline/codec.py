"""Small encodings of the status data: ascending integers as LEB128 gaps, and the hotlist as
sorted xz-compressed lines. Decoders refuse damaged or oversized input (it comes off a network)."""

from __future__ import annotations

import hashlib
import lzma
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from vimark.client.offline.envelope import OfflineDataRefused

MAX_HOTLIST_BYTES = 64 * 1024 * 1024  # decompressed; a 40 M province's is about 4 MB


def encode_gaps(values: Iterable[int]) -> bytes:
    """Ascending non-negative integers as unsigned LEB128 gaps (the first from 0)."""
    out = bytearray()
    previous = 0
    for value in values:
        gap = value - previous
        if gap < 0:
            raise ValueError("values must ascend")
        previous = value
        while gap >= 0x80:
            out.append(gap & 0x7F | 0x80)
            gap >>= 7
        out.append(gap)
    return bytes(out)


def decode_gaps(data: bytes, what: str) -> list[int]:
    values: list[int] = []
    value = gap = shift = 0
    for byte in data:
        gap |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80:
            if shift > 63:
                raise OfflineDataRefused(f"{what}: a gap is longer than 64 bits")
            continue
        value += gap
        values.append(value)
        gap = shift = 0
    if shift:
        raise OfflineDataRefused(f"{what}: truncated")
    return values


def encode_positions(positions: npt.NDArray[np.int64]) -> bytes:
    """encode_gaps for a large ascending array (the flips of a delta), vectorised."""
    if len(positions) == 0:
        return b""
    signed_gaps = np.diff(positions.astype(np.int64), prepend=0)
    if int(signed_gaps.min()) < 0:
        raise ValueError("positions must ascend")
    gaps = signed_gaps.astype(np.uint64)
    # Each gap as up to 10 bytes of 7 bits, then drop the unneeded high bytes.
    groups = np.stack([(gaps >> np.uint64(7 * i)) & np.uint64(0x7F) for i in range(10)], axis=1).astype(np.uint8)
    nonzero = groups != 0
    used = np.maximum(1, 10 - np.argmax(nonzero[:, ::-1], axis=1))  # up to the highest non-zero group
    used[~nonzero.any(axis=1)] = 1
    keep = np.arange(10)[None, :] < used[:, None]
    continuation = np.arange(10)[None, :] < (used - 1)[:, None]
    groups |= (continuation * 0x80).astype(np.uint8)
    return bytes(groups[keep].tobytes())


def plate_key(plate_type: str, plate_number: str) -> str:
    return f"{plate_type}:{plate_number}"


def hotlist_lines(entries: Mapping[str, int]) -> bytes:
    """The canonical text: "<plate type>:<plate number>\\t<status bits>\\n", sorted by UTF-8 bytes."""
    encoded = sorted((key.encode(), bits) for key, bits in entries.items())
    return b"".join(key + b"\t" + str(bits).encode() + b"\n" for key, bits in encoded)


def compress(data: bytes, preset: int = 9) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=preset)


def decompress(data: bytes, what: str, limit: int = MAX_HOTLIST_BYTES) -> bytes:
    """xz data, refused beyond `limit` bytes decompressed (a small download must not become a huge one)."""
    if not data:
        return b""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = decompressor.decompress(data, max_length=limit + 1)
    except lzma.LZMAError:
        raise OfflineDataRefused(f"{what}: not xz data") from None
    if not decompressor.eof or len(out) > limit:
        raise OfflineDataRefused(f"{what}: truncated or over {limit} bytes")
    return out


def parse_hotlist(lines: bytes, what: str) -> dict[str, int]:
    entries: dict[str, int] = {}
    try:
        for line in lines.decode().splitlines():
            key, bits = line.split("\t")
            entries[key] = int(bits)
    except ValueError:
        raise OfflineDataRefused(f"{what}: a line is not '<plate type>:<plate>\\t<status bits>'") from None
    return entries


def digest(*parts: bytes) -> bytes:
    """SHA-256 over each part's SHA-256 (so a part's end cannot be moved into the next)."""
    outer = hashlib.sha256(b"vimark/v1/status-content\x00")
    for part in parts:
        outer.update(hashlib.sha256(part).digest())
    return outer.digest()
