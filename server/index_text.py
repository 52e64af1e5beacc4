"""Each vehicle's plate and VIN as the index keeps them: only to confirm a lookup and to answer.

Three homes, one interface: an array in memory (a server with no checkpoint directory); a
checkpoint's text section, read entry by entry with pread, plus a dict of what changed since (the
overlay, folded into the next checkpoint), so the text costs the process no memory and stays in
the page cache, shared by a node's workers (read, where the extension is built, with its read_at: the
GIL kept for a read the page cache answers); and, while the index is read from the store, a spool
file the text is written to in vehicle-id order, which becomes the next checkpoint's text section.

Not a memory mapping: each read through one maps the pages around it as well (the kernel's
fault-around, which MADV_RANDOM did not stop here), and 10,000 lookups made 314 MB of a
10 M-vehicle checkpoint resident in the process. A pread is one system call per lookup.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vimark.server.records import Texts

TEXT = np.dtype([("plate", "S16"), ("vin", "S17")])  # UTF-8; the longest GA 36-2018 plate is 13 bytes
_CHUNK_ITEMS = 1 << 18


@functools.cache
def _read_at() -> Callable[[int, int, int], bytes]:
    """os.pread, or the extension's read_at (server/_hotpath_index.c): the same read, which keeps
    the GIL when the page cache holds the bytes. Found on first use: hotpath imports the index."""
    from vimark.server import hotpath

    return hotpath.native.read_at if hotpath.native is not None else os.pread  # type: ignore[no-any-return]


class TextColumns:
    def __init__(self, capacity: int = 0) -> None:
        self.base: np.ndarray[Any, Any] = np.zeros(capacity, TEXT)
        self.overlay: dict[int, tuple[bytes, bytes]] = {}  # changes since a file's text (TextOnFile)

    def __len__(self) -> int:
        return len(self.base)

    def close(self) -> None:
        pass

    def get(self, i: int) -> tuple[bytes, bytes]:
        hit = self.overlay.get(i)
        if hit is not None:
            return hit
        if i < len(self.base):
            plate, vin = self.base[i].item()
            return plate, vin
        return b"", b""

    def put(self, i: int, plate: bytes, vin: bytes) -> None:
        self.base[i] = (plate, vin)  # the index reserved room for i first

    def put_many(self, ids: npt.NDArray[np.int64], plates: Texts, vins: Texts) -> None:
        self.base["plate"][ids] = plates
        self.base["vin"][ids] = vins

    def reserve(self, size: int) -> None:
        if len(self.base) < size:
            grown = np.zeros(size, TEXT)
            grown[: len(self.base)] = self.base
            self.base = grown

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return int(self.base.nbytes) + 120 * len(self.overlay)

    def section(self, items: int, overlay: dict[int, tuple[bytes, bytes]]) -> Callable[[], Iterator[bytes]]:
        """The first `items` entries as a checkpoint section's bytes, a chunk at a time, patched
        with `overlay` (a copy of the overlay taken with the rows)."""
        changed = np.array(sorted(overlay), np.int64)

        def chunks() -> Iterator[bytes]:
            for start in range(0, items, _CHUNK_ITEMS):
                end = min(items, start + _CHUNK_ITEMS)
                block = self._read(start, end)
                lo, hi = np.searchsorted(changed, [start, end])
                for i in changed[lo:hi].tolist():
                    block[i - start] = overlay[i]
                yield block.tobytes()

        return chunks

    def _read(self, start: int, end: int) -> np.ndarray[Any, Any]:
        block = np.zeros(end - start, TEXT)
        have = max(0, min(end, len(self.base)) - start)
        block[:have] = self.base[start : start + have]
        return block


class TextOnFile(TextColumns):
    """A checkpoint's text section (`items` entries at `offset`), read with pread as needed."""

    def __init__(self, path: Path, offset: int, items: int, fd: int | None = None) -> None:
        """`fd`, if given, is a descriptor open on that file (it is then this object's to close)."""
        super().__init__()
        self.path, self.offset, self.items = path, offset, items
        self._fd = os.open(path, os.O_RDONLY) if fd is None else fd

    def __len__(self) -> int:
        return self.items

    def get(self, i: int) -> tuple[bytes, bytes]:
        hit = self.overlay.get(i)
        if hit is not None:
            return hit
        if i < self.items:
            raw = _read_at()(self._fd, TEXT.itemsize, self.offset + i * TEXT.itemsize)
            return raw[:16].rstrip(b"\0"), raw[16:].rstrip(b"\0")  # as numpy reads S16 and S17
        return b"", b""

    def put(self, i: int, plate: bytes, vin: bytes) -> None:
        self.overlay[i] = (plate, vin)

    def put_many(self, ids: npt.NDArray[np.int64], plates: Texts, vins: Texts) -> None:
        as_bytes = [t.tolist() if isinstance(t, np.ndarray) else t for t in (plates, vins)]
        self.overlay.update(zip(ids.tolist(), zip(*as_bytes, strict=True), strict=True))

    def reserve(self, size: int) -> None:
        pass  # new vehicles' text goes to the overlay

    @property
    def nbytes(self) -> int:
        """Memory held: the overlay (the file's text is the page cache's, not counted)."""
        return 120 * len(self.overlay)

    def _read(self, start: int, end: int) -> np.ndarray[Any, Any]:
        block = np.zeros(end - start, TEXT)
        have = max(0, min(end, self.items) - start)
        if have:
            data = os.pread(self._fd, have * TEXT.itemsize, self.offset + start * TEXT.itemsize)
            block[: len(data) // TEXT.itemsize] = np.frombuffer(data, TEXT)
        return block

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TextSpool(TextColumns):
    """Text written to a file as the store streams it, in ascending vehicle id (holes zero)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.written = 0  # entries 0..written-1 are on file

    def put(self, i: int, plate: bytes, vin: bytes) -> None:
        self.put_many(np.array([i], np.int64), [plate], [vin])

    def put_many(self, ids: npt.NDArray[np.int64], plates: Texts, vins: Texts) -> None:
        if len(ids) == 0:
            return
        if int(ids[0]) < self.written or np.any(np.diff(ids) <= 0):
            raise ValueError("the store's snapshot did not come in ascending vehicle id")
        block = np.zeros(int(ids[-1]) + 1 - self.written, TEXT)
        at = ids - self.written
        block["plate"][at] = plates
        block["vin"][at] = vins
        os.pwrite(self._fd, block.tobytes(), self.written * TEXT.itemsize)
        self.written = int(ids[-1]) + 1

    def get(self, i: int) -> tuple[bytes, bytes]:
        raise RuntimeError("the spool is written while loading, read only as a checkpoint section")

    def reserve(self, size: int) -> None:
        pass

    def section(self, items: int, overlay: dict[int, tuple[bytes, bytes]]) -> Callable[[], Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            for start in range(0, items, _CHUNK_ITEMS):
                end = min(items, start + _CHUNK_ITEMS)
                data = os.pread(self._fd, (end - start) * TEXT.itemsize, start * TEXT.itemsize)
                yield data + bytes((end - start) * TEXT.itemsize - len(data))  # holes past the end

        return chunks

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)
