"""The in-memory validity index: every vehicle's current mark, validity and status.

Derived from the store (principle 1): loaded at start (from a checkpoint, or streamed from the
store), then kept current by applying change-log rows in order. The verify path reads only this.
It is sized for a province (10-40 million vehicles): what Verify and Lookup judge by is one
packed 36-byte row per vehicle, indexed by the store's vehicle id, plus about 10 bytes of
lookups (server/index_lookup.py). The plate and VIN text, needed only to confirm a lookup and to
answer one, is kept apart (index_text.py): on file in the checkpoint when there is one.

Every key hit is confirmed, so neither a hash collision nor a plate that moved to another
vehicle returns the wrong one: a lookup by plate or VIN against the stored text; a mark's
vehicle (`for_mark`) against both its plate's and its VIN's 64-bit hashes.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import functools
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vimark.client.domain import VehicleCategory
from vimark.server.index_checkpoint import Section, array_chunks
from vimark.server.index_checksum import MASK, STEP, mix, mix_sum, revoked_mix
from vimark.server.index_keys import plate_hash, plate_hashes, vin_hash, vin_hashes
from vimark.server.index_lookup import KeyLookup
from vimark.server.index_text import TEXT, TextColumns
from vimark.server.records import Change, VehicleColumns, VehicleRecord, VehicleSnapshot

_CATEGORIES = list(VehicleCategory)
_CATEGORY_CODE = {c: i for i, c in enumerate(_CATEGORIES)}
_CATEGORY_CODE_BY_VALUE = {c.value: i for i, c in enumerate(_CATEGORIES)}
ROW = np.dtype(
    [
        ("serial", "<u8"),  # the current mark; 0 = none yet
        ("plate_hash", "<u8"),  # index_keys.plate_hash(type, plate)
        ("vin_hash", "<u8"),
        ("registered", "<u2"),  # days since 1900-01-01 (to 2079-06-06; the registry refuses earlier)
        ("valid_until", "<u2"),  # Month; 0 = none
        ("status", "<u2"),
        ("category", "u1"),
        ("plate_type", "u1"),
        ("seats", "u1"),
        ("flags", "u1"),  # PRESENT | EXEMPTION_LOST
    ]
)
PRESENT, EXEMPTION_LOST = 1, 2
_DAY_ZERO = dt.date(1900, 1, 1).toordinal()
_MIN_DELTA_FOR_REBUILD = 65_536


@functools.cache
def _compiled() -> Any:
    """The compiled module (for its plate_hits and vin_hits, server/_hotpath_index.c), or None:
    imported on first use, as hotpath imports this module."""
    from vimark.server import hotpath

    return hotpath.native


def return_freed_memory() -> None:
    """Hand freed memory back to the system: glibc keeps freed heap for reuse, and a province's
    start frees hundreds of MB of temporaries. Only on glibc; elsewhere nothing happens."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _with_headroom(n: int) -> int:
    """Rows for n vehicles plus a little room for new ones, so growing (a copy under the lock)
    stays rare without costing a province much (1/64: 0.6 bytes per vehicle)."""
    return n + n // 64 + 1024


class ValidityIndex:
    def __init__(self, capacity: int = 1024) -> None:
        # The compiled reads (server/_hotpath_index.c) take _lock, _rows (ROW, at fixed offsets),
        # _by_plate and _by_vin (their delta, ids, directory and bits) and _revoked by name, as
        # for_mark and _hits do: a change to these is a change there too (tests/test_hotpath.py
        # holds the two to one answer).
        self._lock = threading.Lock()
        self._rows = np.zeros(capacity, ROW)
        self._text = TextColumns(capacity)
        self._by_plate = KeyLookup()
        self._by_vin = KeyLookup()
        self._revoked: set[int] = set()
        self._count = 0
        self._sum = 0  # sum of index_checksum.mix over present vehicles, mod 2^64
        self._revoked_sum = 0
        self.last_change_id = 0

    # -- writing -----------------------------------------------------------------------------
    def load(self, last_change_id: int, vehicles: Sequence[VehicleRecord], revoked: Iterable[int]) -> None:
        """Fill an empty index from a store snapshot."""
        with self._lock:
            # A little headroom for new vehicles, so growing (a copy under the lock) stays rare.
            self._reserve(_with_headroom(max((v.vehicle_id for v in vehicles), default=0) + 1))
            for vehicle in vehicles:
                self._put(vehicle, track=False)  # the lookups are built once, below
            self._set_revoked(revoked)
            self.last_change_id = last_change_id
            self._rebuild_lookups()

    def load_snapshot(self, snapshot: VehicleSnapshot, text: TextColumns | None = None) -> None:
        """Fill an empty index from a streamed store snapshot (`Store.snapshot_chunks`), chunk by
        chunk straight into the packed rows: the same index as `load` of the same snapshot, with
        no Python object per vehicle beyond one chunk's stored values. `text`, if given, is where
        the plates and VINs go instead of memory (a spool for the checkpoint, index_text.py)."""
        with self._lock:
            capacity = _with_headroom(snapshot.max_vehicle_id + 1)
            if text is not None:
                self._text = text
            self._reserve(capacity)
            for columns in snapshot.chunks:
                self._put_columns(columns)
            self._set_revoked(snapshot.revoked)
            self.last_change_id = snapshot.last_change_id
            return_freed_memory()  # the chunks' values, before the lookups' temporaries
            self._rebuild_lookups()

    def _put_columns(self, c: VehicleColumns, *, track: bool = False) -> None:
        """A chunk of vehicles (each id at most once), as `_put` puts each, a column at a time."""
        n = len(c.vehicle_id)
        if n == 0:
            return
        ids = np.asarray(c.vehicle_id, np.int64)
        top = int(ids.max())
        if top >= len(self._rows):  # not in a consistent snapshot (its highest id sized the rows)
            self._reserve(max(top + 1, len(self._rows) * 5 // 4))
        plates, vins = np.asarray(c.plate_number, TEXT["plate"]), np.asarray(c.vin, TEXT["vin"])
        block = np.empty(n, ROW)
        block["serial"] = np.asarray(c.current_serial, np.uint64)
        block["plate_type"] = np.asarray(c.plate_type, np.uint8)
        block["plate_hash"] = plate_hashes(block["plate_type"], plates)
        block["vin_hash"] = vin_hashes(vins)
        block["registered"] = np.clip(np.asarray(c.registered_on, np.int64) - _DAY_ZERO, 0, 0xFFFF)
        block["valid_until"] = np.asarray(c.valid_until, np.uint16)
        block["status"] = np.asarray(c.status_bits, np.uint16)
        block["category"] = np.fromiter(map(_CATEGORY_CODE_BY_VALUE.__getitem__, c.category), np.uint8, n)
        block["seats"] = np.asarray(c.seats, np.uint8)
        block["flags"] = PRESENT | np.asarray(c.exemption_lost, np.bool_).astype(np.uint8) * EXEMPTION_LOST
        old = self._rows[ids]
        was = (old["flags"] & PRESENT).astype(bool)
        self._count += n - int(np.count_nonzero(was))
        self._sum = (self._sum - mix_sum(ids[was], old[was]) + mix_sum(ids, block)) & MASK
        self._rows[ids] = block
        # Only new vehicles and those whose plate or VIN changed: their text and keys. A new mark
        # or status leaves both as they were, and an overlay entry for each of a province's
        # vehicles (a backfill) would cost about 120 bytes a vehicle until the next checkpoint.
        moved = ~was | (old["plate_hash"] != block["plate_hash"]) | (old["vin_hash"] != block["vin_hash"])
        if not moved.all():
            ids, plates, vins, block = ids[moved], plates[moved], vins[moved], block[moved]
        self._text.put_many(ids, plates, vins)
        if track:
            self._by_plate.delta.update(zip(block["plate_hash"].tolist(), ids.tolist(), strict=True))
            self._by_vin.delta.update(zip(block["vin_hash"].tolist(), ids.tolist(), strict=True))

    def apply(self, changes: Iterable[Change]) -> int:
        """Apply change-log rows in id order; rows at or below last_change_id are skipped
        (so replaying is harmless). Returns how many were applied."""
        applied = 0
        with self._lock:
            for change in changes:
                if change.change_id <= self.last_change_id:
                    continue
                self._put(change.vehicle)
                if change.revoked_serial is not None:
                    self._revoke(change.revoked_serial)
                self.last_change_id = change.change_id
                applied += 1
            self._rebuild_if_due()
        return applied

    def apply_columns(
        self, last_change_id: int, vehicles: VehicleColumns, revoked: Iterable[int], *, track: bool = True
    ) -> None:
        """Apply a run of change-log rows at once (the vehicles each as they now read, each id
        once; the serials they revoked), ending at `last_change_id`: the bulk form of `apply`.
        With track=False their new keys are found only after `rebuild_lookups` (a long replay
        rebuilds once at its end rather than growing the delta by millions)."""
        with self._lock:
            if last_change_id <= self.last_change_id:
                return
            self._put_columns(vehicles, track=track)
            for serial in revoked:
                self._revoke(serial)
            self.last_change_id = last_change_id
            if track:
                self._rebuild_if_due()

    def rebuild_lookups(self) -> None:
        with self._lock:
            self._rebuild_lookups()

    def text_overlay_size(self) -> int:
        """Vehicles whose text changed since the checkpoint (the next one folds them in)."""
        return len(self._text.overlay)

    def _put(self, v: VehicleRecord, *, track: bool = True) -> None:
        i = v.vehicle_id
        if i >= len(self._rows):
            self._reserve(max(i + 1, len(self._rows) * 5 // 4))  # grow by a quarter: memory is the cost
        old = self._rows[i].item()
        if old[-1] & PRESENT:
            self._sum -= mix(i, old)
        else:
            self._count += 1
        plate_key, vin_key = plate_hash(int(v.plate_type), v.plate_number), vin_hash(v.vin)
        row = (
            v.current_serial,
            plate_key,
            vin_key,
            min(max(v.registered_on.toordinal() - _DAY_ZERO, 0), 0xFFFF),
            v.valid_until or 0,
            v.status_bits,
            _CATEGORY_CODE[v.category],
            int(v.plate_type),
            v.seats,
            PRESENT | (EXEMPTION_LOST if v.exemption_lost else 0),
        )
        self._rows[i] = row
        self._sum = (self._sum + mix(i, row)) & MASK
        if old[-1] & PRESENT and old[1] == plate_key and old[2] == vin_key:
            return  # the same plate and VIN: text and lookups as they were (as in _put_columns)
        self._text.put(i, v.plate_number.encode(), v.vin.encode())
        if track:
            self._by_plate.delta[plate_key] = i
            self._by_vin.delta[vin_key] = i

    def _revoke(self, serial: int) -> None:
        if serial not in self._revoked:
            self._revoked.add(serial)
            self._revoked_sum = (self._revoked_sum + revoked_mix(serial)) & MASK

    def _set_revoked(self, revoked: Iterable[int]) -> None:
        self._revoked, self._revoked_sum = set(), 0
        for serial in revoked:
            self._revoke(serial)

    def _reserve(self, size: int) -> None:
        if len(self._rows) < size:
            grown = np.zeros(size, ROW)
            grown[: len(self._rows)] = self._rows
            self._rows = grown
            self._text.reserve(size)

    def _rebuild_if_due(self) -> None:
        if len(self._by_plate.delta) > max(_MIN_DELTA_FOR_REBUILD, self._count // 8):
            self._rebuild_lookups()

    def _rebuild_lookups(self) -> None:
        ids = np.flatnonzero(self._rows["flags"] & PRESENT).astype(np.uint32)
        self._by_plate.rebuild(self._rows["plate_hash"], ids)
        self._by_vin.rebuild(self._rows["vin_hash"], ids)

    # -- reading -----------------------------------------------------------------------------
    def by_plate(self, plate_type: str, plate_number: str) -> VehicleRecord | None:
        if not plate_type.isdigit():
            return None  # no such plate type: no vehicle has it
        code, key = int(plate_type), plate_number.encode()
        with self._lock:
            for i in self._plate_hits(code, plate_number):
                plate, vin = self._text.get(i)
                if plate == key:  # and then the plate type, from the record (its row read once)
                    found = self._record(i, plate_number, vin.decode())
                    if int(found.plate_type) == code:
                        return found
        return None

    def by_vin(self, vin: str) -> VehicleRecord | None:
        key = vin.encode()
        with self._lock:
            native = _compiled()
            hits = None if native is None else native.vin_hits(self._rows, self._by_vin, key)
            for i in self._hits(self._by_vin, vin_hash(vin), "vin_hash") if hits is None else hits:
                plate, stored_vin = self._text.get(i)
                if stored_vin == key:
                    return self._record(i, plate.decode(), vin)
        return None

    def for_mark(self, plate_type: str, plate_number: str, vin: str) -> VehicleRecord | None:
        """The vehicle a mark names, for Verify: the one holding its plate now, with that
        vehicle's VIN (the mark's own when their hashes agree, so its text is not read)."""
        if not plate_type.isdigit():
            return None
        vin_key = vin_hash(vin)
        with self._lock:
            for i in self._plate_hits(int(plate_type), plate_number):
                if int(self._rows["vin_hash"][i]) == vin_key:  # both 64-bit hashes agree
                    return self._record(i, plate_number, vin)
                plate, stored_vin = self._text.get(i)  # another VIN: the plate has moved on
                if plate == plate_number.encode() and self._rows["plate_type"][i] == int(plate_type):
                    return self._record(i, plate_number, stored_vin.decode())
        return None

    def _plate_hits(self, code: int, plate_number: str) -> list[int]:
        """`_hits` of a plate, by the compiled probe when it is built (it holds to this one)."""
        native = _compiled()
        if native is not None and code < 256:  # a row's plate type is one byte: a bigger code is nobody's
            hits: list[int] | None = native.plate_hits(self._rows, self._by_plate, code, plate_number.encode())
            if hits is not None:
                return hits
        return self._hits(self._by_plate, plate_hash(code, plate_number), "plate_hash")

    def _hits(self, lookup: KeyLookup, h: int, column: str) -> list[int]:
        """Candidate ids whose row still carries hash h (present rows only)."""
        rows = self._rows
        seen: list[int] = []
        for i in lookup.candidates(h):
            if i not in seen and rows[column][i] == h and rows["flags"][i] & PRESENT:
                seen.append(i)
        return seen

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revoked

    def _record(self, i: int, plate_number: str, vin: str) -> VehicleRecord:
        serial, _, _, registered, valid_until, status, category, plate_type, seats, flags = self._rows[i].item()
        return VehicleRecord(
            vehicle_id=i,
            plate_type=f"{plate_type:02d}",
            plate_number=plate_number,
            vin=vin,
            category=_CATEGORIES[category],
            registered_on=dt.date.fromordinal(registered + _DAY_ZERO),
            seats=seats,
            exemption_lost=bool(flags & EXEMPTION_LOST),
            status_bits=status,
            valid_until=valid_until or None,
            current_serial=serial,
        )

    def __len__(self) -> int:
        return self._count

    def nbytes(self) -> int:
        """Bytes the index holds in its own memory (the per-vehicle cost, measured); text left on
        file in a checkpoint is not counted (the page cache holds it, shared)."""
        lookups = self._by_plate.nbytes + self._by_vin.nbytes
        return int(self._rows.nbytes) + lookups + self._text.nbytes + 60 * len(self._revoked)

    def checksum(self) -> str:
        """A digest of the contents, kept as rows change (so reading it costs nothing): two
        indexes with the same vehicles, revocations and change id agree."""
        with self._lock:
            parts = (self._count, self._sum, len(self._revoked), self._revoked_sum, self.last_change_id)
        return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()

    def full_checksum(self) -> str:
        """`checksum` recomputed from every row (tests compare both)."""
        with self._lock:
            count, total = row_sums(self._rows)
            revoked = sum(revoked_mix(s) for s in self._revoked) & MASK
            parts = (count, total, len(self._revoked), revoked, self.last_change_id)
        return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()

    # -- checkpoints (index_checkpoint.py) --------------------------------------------------
    def checkpoint_sections(self) -> tuple[int, int, list[Section], dict[int, tuple[bytes, bytes]]]:
        """(change id, vehicles, sections, the text overlay they hold) for a checkpoint written
        while the index serves.

        The lookups, revocations and text overlay are taken as they are at that change id; the
        rows are copied a chunk at a time under the lock, so some may already reflect later
        changes. That is safe because a change-log row sets its vehicle's whole row as it now
        reads: replaying the log from the change id, as a start from the checkpoint does, ends
        in exactly the index this one will be."""
        with self._lock:
            change_id, count, items = self.last_change_id, self._count, len(self._rows)
            plate, vin = self._by_plate, self._by_vin
            lookups = [plate.ids, plate.directory, vin.ids, vin.directory]
            deltas = [_delta_array(plate.delta), _delta_array(vin.delta)]
            revoked = np.array(sorted(self._revoked), np.uint64)
            overlay = dict(self._text.overlay)
            text = self._text.section(items, overlay)
        sums: list[int] = []
        sections = [
            Section("rows", ROW, items, self._rows_in_chunks(items, sums)),
            Section("sums", np.dtype("<u8"), 2, lambda: [np.array(sums, "<u8").tobytes()]),
            Section("text", TEXT, items, text),
            *(
                Section(name, np.dtype(np.uint32), len(a), array_chunks(a))
                for name, a in zip(_LOOKUPS, lookups, strict=True)
            ),
            *(Section(name, _DELTA, len(a), array_chunks(a)) for name, a in zip(_DELTAS, deltas, strict=True)),
            Section("revoked", np.dtype(np.uint64), len(revoked), array_chunks(revoked)),
        ]
        return change_id, count, sections, overlay

    def _rows_in_chunks(self, items: int, sums: list[int]) -> Callable[[], Iterator[bytes]]:
        """The rows a chunk at a time; `sums` gets their (count, content sum) as written, for the
        section after them (so a start need not recompute it)."""

        def chunks() -> Iterator[bytes]:
            count = total = 0
            for start in range(0, items, STEP):
                with self._lock:  # a short hold per chunk: Verify waits at most one chunk's copy
                    block = self._rows[start : min(items, start + STEP)].copy()
                n, mixed = row_sums(block, start)
                count, total = count + n, (total + mixed) & MASK
                yield block.tobytes()
            sums[:] = [count, total]

        return chunks

    def restore(self, change_id: int, arrays: dict[str, Any], text: TextColumns) -> None:
        """Fill an empty index from a checked checkpoint (then replay the log after change_id).
        Arrays that do not fit together raise ValueError."""
        rows = arrays["rows"]
        if rows.dtype != ROW or len(text) != len(rows):
            raise ValueError("rows and text of different shapes")
        lookups = [arrays[name] for name in _LOOKUPS]
        deltas = [arrays[name] for name in _DELTAS]
        for ids in (lookups[0], lookups[2], deltas[0]["id"], deltas[1]["id"]):
            if len(ids) and int(ids.max()) >= len(rows):
                raise ValueError("a lookup names a vehicle beyond the rows")
        plate, vin = KeyLookup(), KeyLookup()
        for lookup, ids, directory, delta in ((plate, *lookups[:2], deltas[0]), (vin, *lookups[2:], deltas[1])):
            lookup.restore(ids, directory, dict(zip(delta["hash"].tolist(), delta["id"].tolist(), strict=True)))
        with self._lock:
            self._by_plate, self._by_vin = plate, vin
            self._rows, self._text = rows, text
            self._count, self._sum = (int(v) for v in arrays["sums"])
            self._set_revoked(arrays["revoked"].tolist())
            self.last_change_id = change_id

    def use_text(self, text: TextColumns, written: dict[int, tuple[bytes, bytes]] | None = None) -> None:
        """Read text from `text` (a checkpoint just written) from now on, keeping of the overlay
        only what changed after it was written (`written`: the overlay the checkpoint holds)."""
        with self._lock:
            if written is not None:
                text.overlay = {i: v for i, v in self._text.overlay.items() if written.get(i) != v}
            self._text, old = text, self._text
            old.close()  # under the lock: no reader is using it

    def text_source(self) -> TextColumns:
        return self._text


_LOOKUPS = ("plate_ids", "plate_directory", "vin_ids", "vin_directory")
_DELTAS = ("plate_delta", "vin_delta")
_DELTA = np.dtype([("hash", "<u8"), ("id", "<u4")])


def _delta_array(delta: dict[int, int]) -> npt.NDArray[Any]:
    out = np.zeros(len(delta), _DELTA)
    if delta:
        out["hash"] = list(delta)
        out["id"] = list(delta.values())
    return out


def row_sums(rows: npt.NDArray[Any], first_id: int = 0) -> tuple[int, int]:
    """(present vehicles, sum of their mixes) of rows whose first is vehicle `first_id`."""
    count = total = 0
    for start in range(0, len(rows), STEP):
        block = rows[start : start + STEP]
        ids = np.flatnonzero(block["flags"] & PRESENT)
        count += len(ids)
        total += mix_sum(ids + first_id + start, block[ids])
    return count, total & MASK
