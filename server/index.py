"""The in-memory validity index: every vehicle's current mark, validity and status.

Derived from the store (principle 1): loaded from a snapshot at start, then kept current by
applying change-log rows in order. The verify path reads only this. It is sized for a province
(10-40 million vehicles), so each vehicle is one packed 70-byte numpy row, indexed by the
store's vehicle id, plus 24 bytes of lookups, rather than Python objects (several hundred bytes).

Finding a vehicle by plate or VIN: a sorted array of 64-bit key hashes (base) plus a small dict
of keys changed since the base was built (delta). Every hit is confirmed against the stored
plate or VIN, so neither a hash collision nor a plate that moved to another vehicle can return
the wrong one. The base is rebuilt once the delta outgrows a fraction of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from vimark.client.domain import VehicleCategory
from vimark.server.records import Change, VehicleColumns, VehicleRecord, VehicleSnapshot

_CATEGORIES = list(VehicleCategory)
_CATEGORY_CODE = {c: i for i, c in enumerate(_CATEGORIES)}
_CATEGORY_CODE_BY_VALUE = {c.value: i for i, c in enumerate(_CATEGORIES)}
# One packed row per vehicle (70 bytes); reading a row is one .item() call, not one per field.
_ROW = np.dtype(
    [
        ("present", np.bool_),
        ("plate_type", np.uint8),
        ("plate", "S16"),  # UTF-8; the longest GA 36-2018 plate is 13 bytes
        ("vin", "S17"),
        ("category", np.uint8),
        ("registered", np.int32),  # date.toordinal()
        ("seats", np.uint8),
        ("exemption_lost", np.bool_),
        ("status", np.uint16),
        ("valid_until", np.uint16),  # Month; 0 = none
        ("serial", np.uint64),
        ("plate_hash", np.uint64),
        ("vin_hash", np.uint64),
    ]
)
_MIN_DELTA_FOR_REBUILD = 65_536


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _key_hashes(keys: Iterable[bytes], n: int) -> npt.NDArray[np.uint64]:
    """`_key_hash` of n UTF-8 keys at once, as an array."""
    blake2b = hashlib.blake2b
    digests = b"".join(blake2b(key, digest_size=8).digest() for key in keys)
    assert len(digests) == 8 * n
    return np.frombuffer(digests, "<u8").astype(np.uint64)


def _plate_key(plate_type: str, plate_number: str) -> str:
    return f"{plate_type}:{plate_number}"


class _KeyLookup:
    """key -> vehicle id candidates: sorted hash array (base) plus recent keys (delta)."""

    def __init__(self) -> None:
        self.hashes: npt.NDArray[np.uint64] = np.zeros(0, np.uint64)
        self.ids: npt.NDArray[np.uint32] = np.zeros(0, np.uint32)
        self.delta: dict[str, int] = {}

    def candidates(self, key: str) -> Iterator[int]:
        """Vehicle ids that may hold `key`, newest first; the caller confirms each."""
        if key in self.delta:
            yield self.delta[key]
        h = np.uint64(_key_hash(key))
        hashes = self.hashes
        i = int(hashes.searchsorted(h))
        while i < len(hashes) and hashes[i] == h:  # more than one only on a 64-bit collision
            yield int(self.ids[i])
            i += 1

    def rebuild(self, hashes: npt.NDArray[np.uint64], ids: npt.NDArray[np.uint32]) -> None:
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.ids, self.delta = hashes[order], ids[order], {}

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.ids.nbytes) + 100 * len(self.delta)


class ValidityIndex:
    def __init__(self, capacity: int = 1024) -> None:
        self._lock = threading.Lock()
        self._rows = np.zeros(capacity, _ROW)
        self._by_plate = _KeyLookup()
        self._by_vin = _KeyLookup()
        self._revoked: set[int] = set()
        self._count = 0
        self.last_change_id = 0

    # -- writing -----------------------------------------------------------------------------
    def load(self, last_change_id: int, vehicles: Sequence[VehicleRecord], revoked: Iterable[int]) -> None:
        """Fill an empty index from a store snapshot."""
        with self._lock:
            # A little headroom for new vehicles, so growing (a copy under the lock) stays rare.
            self._reserve((max((v.vehicle_id for v in vehicles), default=0) + 1) * 17 // 16 + 1024)
            for vehicle in vehicles:
                self._put(vehicle, track=False)  # the lookups are built once, below
            self._revoked = set(revoked)
            self.last_change_id = last_change_id
            self._rebuild_lookups()

    def load_snapshot(self, snapshot: VehicleSnapshot) -> None:
        """Fill an empty index from a streamed store snapshot (`Store.snapshot_chunks`), chunk by
        chunk straight into the packed rows: the same index as `load` of the same snapshot, with
        no Python object per vehicle beyond one chunk's stored values."""
        with self._lock:
            self._reserve((snapshot.max_vehicle_id + 1) * 17 // 16 + 1024)  # as `load` sizes it
            for columns in snapshot.chunks:
                self._put_columns(columns)
            self._revoked = set(snapshot.revoked)
            self.last_change_id = snapshot.last_change_id
            self._rebuild_lookups()

    def _put_columns(self, c: VehicleColumns) -> None:
        """One chunk of vehicles, as `_put(..., track=False)` puts each, a column at a time."""
        n = len(c.vehicle_id)
        if n == 0:
            return
        ids = np.asarray(c.vehicle_id, np.int64)
        top = int(ids.max())
        if top >= len(self._rows):  # not in a consistent snapshot (its highest id sized the rows)
            self._reserve(max(top + 1, len(self._rows) * 5 // 4))
        plates = [p.encode() for p in c.plate_number]
        vins = [v.encode() for v in c.vin]
        block = np.empty(n, _ROW)
        block["present"] = True
        block["plate_type"] = np.asarray(c.plate_type).astype(np.uint8)  # "02" -> 2, as int() reads it
        block["plate"] = plates
        block["vin"] = vins
        block["category"] = np.fromiter(map(_CATEGORY_CODE_BY_VALUE.__getitem__, c.category), np.uint8, n)
        block["registered"] = np.asarray(c.registered_on, np.int32)
        block["seats"] = np.asarray(c.seats, np.uint8)
        block["exemption_lost"] = np.asarray(c.exemption_lost, np.bool_)
        block["status"] = np.asarray(c.status_bits, np.uint16)
        block["valid_until"] = np.fromiter((m or 0 for m in c.valid_until), np.uint16, n)
        block["serial"] = np.asarray(c.current_serial, np.uint64)
        block["plate_hash"] = _key_hashes((t.encode() + b":" + p for t, p in zip(c.plate_type, plates, strict=True)), n)
        block["vin_hash"] = _key_hashes(vins, n)
        self._count += n - int(np.count_nonzero(self._rows["present"][ids]))
        self._rows[ids] = block

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
                    self._revoked.add(change.revoked_serial)
                self.last_change_id = change.change_id
                applied += 1
            if len(self._by_plate.delta) > max(_MIN_DELTA_FOR_REBUILD, self._count // 8):
                self._rebuild_lookups()
        return applied

    def _put(self, v: VehicleRecord, *, track: bool = True) -> None:
        i = v.vehicle_id
        if i >= len(self._rows):
            self._reserve(max(i + 1, len(self._rows) * 5 // 4))  # grow by a quarter: memory is the cost
        if not self._rows["present"][i]:
            self._count += 1
        plate_key = _plate_key(v.plate_type, v.plate_number)
        self._rows[i] = (
            True,
            int(v.plate_type),
            v.plate_number.encode(),
            v.vin.encode(),
            _CATEGORY_CODE[v.category],
            v.registered_on.toordinal(),
            v.seats,
            v.exemption_lost,
            v.status_bits,
            v.valid_until or 0,
            v.current_serial,
            _key_hash(plate_key),
            _key_hash(v.vin),
        )
        if track:
            self._by_plate.delta[plate_key] = i
            self._by_vin.delta[v.vin] = i

    def _reserve(self, size: int) -> None:
        if len(self._rows) < size:
            grown = np.zeros(size, _ROW)
            grown[: len(self._rows)] = self._rows
            self._rows = grown

    def _rebuild_lookups(self) -> None:
        ids = np.flatnonzero(self._rows["present"]).astype(np.uint32)
        self._by_plate.rebuild(self._rows["plate_hash"][ids], ids)
        self._by_vin.rebuild(self._rows["vin_hash"][ids], ids)

    # -- reading -----------------------------------------------------------------------------
    def by_plate(self, plate_type: str, plate_number: str) -> VehicleRecord | None:
        with self._lock:
            for i in self._by_plate.candidates(_plate_key(plate_type, plate_number)):
                record = self._record(i)
                if record.plate_number == plate_number and record.plate_type == plate_type:
                    return record
        return None

    def by_vin(self, vin: str) -> VehicleRecord | None:
        with self._lock:
            for i in self._by_vin.candidates(vin):
                record = self._record(i)
                if record.vin == vin:
                    return record
        return None

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revoked

    def _record(self, i: int) -> VehicleRecord:
        _, plate_type, plate, vin, category, registered, seats, lost, status, valid_until, serial, _, _ = self._rows[
            i
        ].item()
        return VehicleRecord(
            vehicle_id=i,
            plate_type=f"{plate_type:02d}",
            plate_number=plate.decode(),
            vin=vin.decode(),
            category=_CATEGORIES[category],
            registered_on=dt.date.fromordinal(registered),
            seats=seats,
            exemption_lost=lost,
            status_bits=status,
            valid_until=valid_until or None,
            current_serial=serial,
        )

    def __len__(self) -> int:
        return self._count

    def nbytes(self) -> int:
        """Bytes held by the index's arrays and lookups (the per-vehicle cost, measured)."""
        return int(self._rows.nbytes) + self._by_plate.nbytes + self._by_vin.nbytes + 60 * len(self._revoked)

    def checksum(self) -> str:
        """A digest of the contents: two indexes with the same vehicles and revocations agree."""
        with self._lock:
            digest = hashlib.sha256()
            ids = np.flatnonzero(self._rows["present"])
            digest.update(ids.astype(np.int64).tobytes())
            digest.update(self._rows[ids].tobytes())
            digest.update(np.array(sorted(self._revoked), np.uint64).tobytes())
            digest.update(str(self.last_change_id).encode())
            return digest.hexdigest()
