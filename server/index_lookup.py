"""Finding a vehicle id by a key's 64-bit hash (a plate or a VIN), in about 5 bytes per key.

The base is the vehicle ids grouped by the top `bits` bits of their key hash (a bucket, about
four ids each) plus a directory: where each bucket's run of ids starts. The hashes
themselves are not repeated here: a probe compares the candidates' hashes in the index's rows,
so a key whose vehicle changed since the base was built simply stops matching. Keys added or
moved since then are in a small dict (the delta), checked first; the base is rebuilt once the
delta outgrows a fraction of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
_IDS_PER_BUCKET = 4


def _bits_for(n: int) -> int:
    """Directory bits for n keys: about `_IDS_PER_BUCKET` ids per bucket, at least 1 bit."""
    return max(1, (max(n, 1) // _IDS_PER_BUCKET).bit_length())


class KeyLookup:
    """hash -> candidate vehicle ids; the caller confirms each against the row's own hash."""

    def __init__(self) -> None:
        self.ids: U32 = np.zeros(0, np.uint32)
        self.directory: U32 = np.zeros(3, np.uint32)
        self.bits = 1
        self.delta: dict[int, int] = {}

    def candidates(self, h: int) -> Iterator[int]:
        """Ids that may hold the key of hash `h`: the delta's newest first, then the base's run."""
        newest = self.delta.get(h)
        if newest is not None:
            yield newest
        bucket = h >> (64 - self.bits)
        start, end = int(self.directory[bucket]), int(self.directory[bucket + 1])
        yield from self.ids[start:end].tolist()

    def rebuild(self, hashes: U64, ids: U32) -> None:
        """A new base of `ids` keyed by `hashes` (a column of the rows, indexed by id). Only the
        bucket matters (a probe scans its whole run), so ids are sorted by bucket alone: packed
        as bucket << 32 | id into one array sorted in place, so the temporaries stay near 12
        bytes per key and a province's start is bounded by its peak memory."""
        bits = _bits_for(len(ids))
        packed = hashes[ids]
        np.right_shift(packed, np.uint64(64 - bits), out=packed)
        counts = np.bincount(packed.view(np.int64), minlength=2**bits)
        directory = np.zeros(2**bits + 1, np.uint32)
        np.cumsum(counts, out=directory[1:])
        del counts
        np.left_shift(packed, np.uint64(32), out=packed)
        np.bitwise_or(packed, ids, out=packed)
        packed.sort()
        self.ids, self.directory, self.bits, self.delta = packed.astype(np.uint32), directory, bits, {}

    def restore(self, ids: U32, directory: U32, delta: dict[int, int]) -> None:
        """A base and delta as a checkpoint kept them (`bits` follows from the directory)."""
        bits = (len(directory) - 1).bit_length() - 1
        if len(directory) != 2**bits + 1 or (len(directory) and int(directory[-1]) != len(ids)):
            raise ValueError("a key directory that does not match its ids")
        self.ids, self.directory, self.bits, self.delta = ids, directory, bits, delta

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.directory.nbytes) + 100 * len(self.delta)
