"""The index's 64-bit key hashes: of a plate (its type and number) and of a VIN.

One definition, two forms that agree bit for bit: `plate_hash`/`vin_hash` for one key (a lookup),
`plate_hashes`/`vin_hashes` for a chunk of keys held as fixed-width UTF-8 arrays (a start from the
store, a bulk change), in numpy, with no Python object per key. That second form is why the hash
is not BLAKE2b (which it was in checkpoint format 1): hashing a province key by key cost about as
much as reading it from the store.

The key's UTF-8 bytes, zero-padded to whole 64-bit little-endian words (at least `width` bytes: 16
for a plate, the width of the index's plate text, 24 for a VIN), are folded into a seed one word
at a time through MurmurHash3's 64-bit finaliser, a bijection: `h = fmix(h ^ word)`. A plate's seed
carries its plate type, so 闽C12345 as type 01 and as type 02 are different keys. Keys never hold a
NUL (the registry checks their characters), so padding cannot make two keys one. This spreads
keys evenly, which is all the lookups need: every hit is confirmed, against the stored text or,
for a mark's plate, by the VIN's hash as well (`ValidityIndex.for_mark`), and the registry that
writes the keys is trusted, so nobody chooses keys to collide.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

PLATE_WIDTH, VIN_WIDTH = 16, 24  # bytes hashed (whole words): index_text.TEXT's widths, rounded up
_MASK = (1 << 64) - 1
_C1, _C2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53  # MurmurHash3 fmix64
_PLATE_SEED, _VIN_SEED = 0x706C617465000000, 0x76696E0000000000  # "plate", "vin"
_U64 = npt.NDArray[np.uint64]


def _fmix(h: int) -> int:
    h ^= h >> 33
    h = (h * _C1) & _MASK
    h ^= h >> 33
    h = (h * _C2) & _MASK
    return h ^ (h >> 33)


def _fold(seed: int, key: bytes, width: int) -> int:
    words = max(width, len(key) + 7) // 8
    x = int.from_bytes(key, "little")
    h = seed
    for _ in range(words):
        h = _fmix(h ^ (x & _MASK))
        x >>= 64
    return h


def plate_hash(plate_type: int, plate_number: str) -> int:
    return _fold(_PLATE_SEED ^ plate_type, plate_number.encode(), PLATE_WIDTH)


def vin_hash(vin: str) -> int:
    return _fold(_VIN_SEED, vin.encode(), VIN_WIDTH)


def _fmix_array(h: _U64) -> _U64:
    h ^= h >> np.uint64(33)
    h *= np.uint64(_C1)  # numpy's uint64 arithmetic wraps, as the & _MASK above
    h ^= h >> np.uint64(33)
    h *= np.uint64(_C2)
    h ^= h >> np.uint64(33)
    return h


def _fold_array(seeds: _U64, keys: np.ndarray[Any, Any], width: int) -> _U64:
    """keys: a fixed-width bytes array ('S<k>', k <= width), zero-padded as numpy pads it."""
    n, size = len(keys), keys.dtype.itemsize
    if size > width:
        raise ValueError(f"keys of {size} bytes, wider than the {width} hashed")
    padded = np.zeros((n, width), np.uint8)
    padded[:, :size] = np.ascontiguousarray(keys).view(np.uint8).reshape(n, size)
    words = padded.view("<u8")
    h = seeds.astype(np.uint64, copy=True)
    for j in range(width // 8):
        h = _fmix_array(h ^ words[:, j])
    return h


def plate_hashes(plate_types: npt.NDArray[Any], plate_numbers: np.ndarray[Any, Any]) -> _U64:
    """`plate_hash` of each (type code, UTF-8 number of at most PLATE_WIDTH bytes)."""
    seeds = np.asarray(plate_types, np.uint64) ^ np.uint64(_PLATE_SEED)
    return _fold_array(seeds, plate_numbers, PLATE_WIDTH)


def vin_hashes(vins: np.ndarray[Any, Any]) -> _U64:
    """`vin_hash` of each UTF-8 VIN (at most VIN_WIDTH bytes)."""
    return _fold_array(np.full(len(vins), _VIN_SEED, np.uint64), vins, VIN_WIDTH)
