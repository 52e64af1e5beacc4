"""The index's content checksum: a sum mod 2^64 of one 64-bit mix per present vehicle (its id and
row) plus one per revoked serial, kept as rows change so reading it costs nothing, and
recomputed over whole arrays (numpy, a chunk at a time: index.row_sums) to check it and to write
checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

MASK = (1 << 64) - 1
STEP = 1 << 16  # rows per chunk of a whole-index pass: its temporaries stay a few MB
_U64 = npt.NDArray[np.uint64]


def splitmix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def mix(i: int, row: tuple[Any, ...]) -> int:
    serial, plate_hash, vin_hash, registered, valid_until, status, category, plate_type, seats, flags = row
    small = registered | valid_until << 32 | status << 48
    tiny = category | plate_type << 8 | seats << 16 | flags << 24 | (i & 0xFFFFFFFF) << 32
    return splitmix(serial ^ splitmix(plate_hash ^ splitmix(vin_hash ^ splitmix(small ^ splitmix(tiny)))))


def _splitmixes(z: _U64) -> _U64:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix_sum(ids: npt.NDArray[np.int64], rows: npt.NDArray[Any]) -> int:
    """sum(mix(i, row)) mod 2^64 over arrays, as `mix` computes it one row at a time."""
    total = 0
    for start in range(0, len(ids), STEP):  # bounded temporaries
        r, i = rows[start : start + STEP], ids[start : start + STEP].astype(np.uint64)
        small = (
            r["registered"].astype(np.uint64)
            | r["valid_until"].astype(np.uint64) << np.uint64(32)
            | r["status"].astype(np.uint64) << np.uint64(48)
        )
        tiny = (
            r["category"].astype(np.uint64)
            | r["plate_type"].astype(np.uint64) << np.uint64(8)
            | r["seats"].astype(np.uint64) << np.uint64(16)
            | r["flags"].astype(np.uint64) << np.uint64(24)
            | (i & np.uint64(0xFFFFFFFF)) << np.uint64(32)
        )
        z = r["vin_hash"] ^ _splitmixes(small ^ _splitmixes(tiny))
        z = r["serial"] ^ _splitmixes(r["plate_hash"] ^ _splitmixes(z))
        total += int(_splitmixes(z).sum(dtype=np.uint64))
    return total & MASK


def revoked_mix(serial: int) -> int:
    return splitmix(serial ^ 0x5EED)
