"""The index's checkpoint file: its arrays as they were at a change id, for a start in seconds.

A checkpoint is a cache, never the truth (principle 1): whatever is wrong with one (missing,
damaged, written for another database, too old to tail the change log from, or older than the
configured age), it is refused with one reason and the index is read from the store instead.

Layout (little-endian), format 2:

    magic     8 bytes  b"VIMARKIX"
    length    8 bytes  the header's length in bytes (unsigned)
    digest   32 bytes  SHA-256 of the header and then every section, in order
    header   JSON      format, store_id, change_id, made_at (Unix seconds), count, and the
                       sections: name, numpy dtype, offset, items
    sections           each at an offset that is a multiple of 4096, so each can be mapped

The rows and lookups are read into the process's memory (they change as the log is applied);
the plate and VIN text section is left on file, read (with pread) only to confirm or to answer a
lookup, so it stays in the page cache, shared by a node's workers (index_text.py). It
holds VINs: the file is created 0600, written beside its final name and renamed into place once
complete and on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"VIMARKIX"
FORMAT = 2  # 2: key hashes of index_keys (1: BLAKE2b), so a format 1 file is refused and the store read
ALIGN = 4096
_CHUNK = 8 << 20  # bytes hashed or copied at a time
FILE_NAME = "index.ckpt"


class CheckpointRefused(Exception):
    """This checkpoint cannot be used; `str()` says why, in one line for the log."""


@dataclass(frozen=True)
class Section:
    """One array of the file: its name, dtype and length, and (when writing) where its bytes
    come from: chunks of bytes, `items * dtype.itemsize` of them in all."""

    name: str
    dtype: np.dtype[Any]
    items: int
    chunks: Callable[[], Iterable[bytes]] | None = None


@dataclass(frozen=True)
class Header:
    store_id: str
    change_id: int
    change_fingerprint: str  # Store.change_fingerprint(change_id) when written
    made_at: float
    count: int


@dataclass
class Loaded:
    """A checked checkpoint: its header, the arrays read into memory, and for the sections left
    on file their (offset, items)."""

    header: Header
    arrays: dict[str, np.ndarray[Any, Any]]
    on_file: dict[str, tuple[int, int]]
    fd: int  # open for reading on the file checked (the caller's to close): `path` may be replaced


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _layout(header: Header, sections: list[Section]) -> tuple[bytes, list[int]]:
    """The header's bytes and each section's offset (the header's size decides where they start)."""
    start = 0
    while True:  # the offsets' digits change the header's length: settles in a pass or two
        offsets, at = [], start
        for s in sections:
            offsets.append(at)
            at += _aligned(s.items * s.dtype.itemsize)
        described = [
            {"name": s.name, "dtype": np.lib.format.dtype_to_descr(s.dtype), "offset": o, "items": s.items}
            for s, o in zip(sections, offsets, strict=True)
        ]
        text = json.dumps({"format": FORMAT, **header.__dict__, "sections": described}, sort_keys=True).encode()
        first = _aligned(8 + 8 + 32 + len(text))
        if first == start:
            return text, offsets
        start = first


def write(path: Path, header: Header, sections: list[Section]) -> tuple[int, dict[str, int], int]:
    """Write a checkpoint to `path` (atomically: a temporary file renamed into place). Returns
    its size in bytes, each section's offset, and a descriptor open for reading on the file
    written (opened before the rename: another process of the node may replace `path` at once)."""
    text, offsets = _layout(header, sections)
    digest = hashlib.sha256(text)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + len(text).to_bytes(8, "little") + bytes(32) + text)
            for section, offset in zip(sections, offsets, strict=True):
                f.write(bytes(offset - f.tell()))
                expected = section.items * section.dtype.itemsize
                written = 0
                assert section.chunks is not None
                for chunk in section.chunks():
                    digest.update(chunk)
                    f.write(chunk)
                    written += len(chunk)
                if written != expected:
                    raise ValueError(f"section {section.name}: {written} bytes written, {expected} expected")
            size = f.tell()
            f.seek(16)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        reader = os.open(temporary, os.O_RDONLY)
        try:
            os.replace(temporary, path)
        except BaseException:
            os.close(reader)
            raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return size, {s.name: o for s, o in zip(sections, offsets, strict=True)}, reader


def array_chunks(array: np.ndarray[Any, Any], items: int | None = None) -> Callable[[], Iterator[bytes]]:
    """A section's bytes from an array's first `items` (default all), a chunk at a time."""

    def chunks() -> Iterator[bytes]:
        n = len(array) if items is None else items
        step = max(1, _CHUNK // max(array.dtype.itemsize, 1))
        for start in range(0, n, step):
            yield array[start : min(n, start + step)].tobytes()

    return chunks


def read_header(f: BufferedReader) -> tuple[Header, bytes, list[dict[str, Any]], bytes]:
    head = f.read(48)
    if len(head) < 48 or head[:8] != MAGIC:
        raise CheckpointRefused("not a vimark index checkpoint (wrong magic or truncated)")
    length = int.from_bytes(head[8:16], "little")
    if length > 1 << 20:
        raise CheckpointRefused(f"damaged: a header of {length} bytes")
    text = f.read(length)
    try:
        fields = json.loads(text)
        if fields.pop("format") != FORMAT:
            raise CheckpointRefused("written by another version of the checkpoint format")
        sections = fields.pop("sections")
        header = Header(**fields)
    except CheckpointRefused:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointRefused(f"damaged: its header does not read ({exc})") from exc
    return header, head[16:48], sections, text


class _Hasher:
    """The digest computed on a second thread while the next chunk is read (hashlib releases the
    GIL for large updates), in order; `wait_for(buffer)` before a buffer is filled again."""

    def __init__(self, digest: Any) -> None:
        self.digest = digest
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vimark-checkpoint-hash")
        self._pending: dict[int, Future[None]] = {}

    def update(self, data: memoryview, buffer: int = -1) -> None:
        self._pending[buffer] = self._pool.submit(self.digest.update, data)

    def wait_for(self, buffer: int) -> None:
        future = self._pending.pop(buffer, None)
        if future is not None:
            future.result()

    def finish(self) -> bytes:
        self._pool.shutdown(wait=True)
        for future in self._pending.values():
            future.result()
        return bytes(self.digest.digest())


def read(path: Path, accept: Callable[[Header], None], on_file: frozenset[str]) -> Loaded:
    """Read and check a checkpoint: `accept(header)` raises CheckpointRefused for one that is
    foreign or too old (before anything large is read); then every section is read (or, for
    `on_file`, only hashed) while the digest is computed, and compared at the end."""
    try:
        f = path.open("rb")
    except FileNotFoundError as exc:
        raise CheckpointRefused(f"no checkpoint at {path}") from exc
    except OSError as exc:
        raise CheckpointRefused(f"cannot open {path}: {exc.strerror}") from exc
    with f:
        header, expected, described, text = read_header(f)
        accept(header)
        size = os.fstat(f.fileno()).st_size
        hasher = _Hasher(hashlib.sha256(text))
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        left: dict[str, tuple[int, int]] = {}
        try:
            for d in described:
                dtype = np.dtype(np.lib.format.descr_to_dtype(d["dtype"]))
                offset, items = int(d["offset"]), int(d["items"])
                nbytes = items * dtype.itemsize
                if offset % ALIGN or offset + nbytes > size:
                    raise CheckpointRefused(f"damaged: section {d['name']} lies outside the file")
                f.seek(offset)
                if d["name"] in on_file:
                    _hash_range(f, nbytes, hasher)
                    left[d["name"]] = (offset, items)
                else:
                    array = np.empty(items, dtype)
                    view = array.data.cast("B") if nbytes else memoryview(bytearray())
                    for start in range(0, nbytes, _CHUNK):
                        part = view[start : start + _CHUNK]
                        if f.readinto(part) != len(part):
                            raise CheckpointRefused(f"damaged: section {d['name']} is truncated")
                        hasher.update(part)
                    arrays[d["name"]] = array
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointRefused(f"damaged: {exc}") from exc
        finally:
            digest = hasher.finish()
        if digest != expected:
            raise CheckpointRefused("damaged: its checksum does not match its contents")
        return Loaded(header, arrays, left, os.dup(f.fileno()))


def _hash_range(f: BufferedReader, nbytes: int, hasher: _Hasher) -> None:
    """Hash a section left on file, in two alternating buffers, one filled while the other is hashed."""
    buffers = [memoryview(bytearray(_CHUNK)), memoryview(bytearray(_CHUNK))]
    left, turn = nbytes, 0
    while left:
        hasher.wait_for(turn)
        view = buffers[turn]
        n = f.readinto(view[: min(left, _CHUNK)])
        if not n:
            raise CheckpointRefused("damaged: a section is truncated")
        hasher.update(view[:n], turn)
        left -= n
        turn ^= 1
