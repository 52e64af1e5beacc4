"""The in-memory validity index: every vehicle's current mark, validity and status.

Derived from the store (principle 1): loaded from a snapshot at start, then kept current by
applying change-log rows in order. The verify path reads only this. It is sized for a province
(10-40 million vehicles), so vehicles live in numpy columns indexed by the store's vehicle id
(about 70 bytes each) rather than as Python objects (several hundred bytes each).

Finding a vehicle by plate or VIN: a sorted array of 64-bit key hashes (base) plus a small dict
of keys changed since the base was built (delta). Every hit is confirmed against the stored
plate or VIN, so neither a hash collision nor a plate that moved to another vehicle can return
the wrong one. The base is rebuilt once the delta outgrows a fraction of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from vimark.client.domain import VehicleCategory
from vimark.server.records import Change, VehicleRecord

_CATEGORIES = list(VehicleCategory)
_CATEGORY_CODE = {c: i for i, c in enumerate(_CATEGORIES)}
_COLUMNS: dict[str, npt.DTypeLike] = {
    "present": np.bool_,
    "plate_type": np.uint8,
    "plate": "S16",  # UTF-8; the longest GA 36-2018 plate is 13 bytes
    "vin": "S17",
    "plate_hash": np.uint64,
    "vin_hash": np.uint64,
    "category": np.uint8,
    "registered": np.int32,  # date.toordinal()
    "seats": np.uint8,
    "exemption_lost": np.bool_,
    "status": np.uint16,
    "valid_until": np.uint16,  # Month; 0 = none
    "serial": np.uint64,
}
_MIN_DELTA_FOR_REBUILD = 65_536


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _plate_key(plate_type: str, plate_number: str) -> str:
    return f"{plate_type}:{plate_number}"


class _KeyLookup:
    """key -> vehicle id candidates: sorted hash array (base) plus recent keys (delta)."""

    def __init__(self) -> None:
        self.hashes: npt.NDArray[np.uint64] = np.zeros(0, np.uint64)
        self.ids: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self.delta: dict[str, int] = {}

    def candidates(self, key: str) -> list[int]:
        found = [self.delta[key]] if key in self.delta else []
        h = np.uint64(_key_hash(key))
        lo = int(np.searchsorted(self.hashes, h, "left"))
        hi = int(np.searchsorted(self.hashes, h, "right"))
        return found + [int(i) for i in self.ids[lo:hi]]

    def rebuild(self, hashes: npt.NDArray[np.uint64], ids: npt.NDArray[np.int64]) -> None:
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.ids, self.delta = hashes[order], ids[order], {}

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.ids.nbytes) + 100 * len(self.delta)


class ValidityIndex:
    def __init__(self, capacity: int = 1024) -> None:
        self._lock = threading.Lock()
        self._cols: dict[str, npt.NDArray[np.generic]] = {n: np.zeros(capacity, t) for n, t in _COLUMNS.items()}
        self._by_plate = _KeyLookup()
        self._by_vin = _KeyLookup()
        self._revoked: set[int] = set()
        self._count = 0
        self.last_change_id = 0

    # -- writing -----------------------------------------------------------------------------
    def load(self, last_change_id: int, vehicles: Sequence[VehicleRecord], revoked: Iterable[int]) -> None:
        """Fill an empty index from a store snapshot."""
        with self._lock:
            self._reserve(max((v.vehicle_id for v in vehicles), default=0) + 1)
            for vehicle in vehicles:
                self._put(vehicle)
            self._revoked = set(revoked)
            self.last_change_id = last_change_id
            self._rebuild_lookups()

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

    def _put(self, v: VehicleRecord) -> None:
        i = v.vehicle_id
        cols = self._cols
        if i >= len(cols["present"]):
            self._reserve(max(i + 1, len(cols["present"]) * 5 // 4))  # grow by a quarter: memory is the cost
        if not cols["present"][i]:
            self._count += 1
        plate_key = _plate_key(v.plate_type, v.plate_number)
        cols["present"][i] = True
        cols["plate_type"][i] = int(v.plate_type)
        cols["plate"][i] = v.plate_number.encode()
        cols["vin"][i] = v.vin.encode()
        cols["plate_hash"][i] = _key_hash(plate_key)
        cols["vin_hash"][i] = _key_hash(v.vin)
        cols["category"][i] = _CATEGORY_CODE[v.category]
        cols["registered"][i] = v.registered_on.toordinal()
        cols["seats"][i] = v.seats
        cols["exemption_lost"][i] = v.exemption_lost
        cols["status"][i] = v.status_bits
        cols["valid_until"][i] = v.valid_until or 0
        cols["serial"][i] = v.current_serial
        self._by_plate.delta[plate_key] = i
        self._by_vin.delta[v.vin] = i

    def _reserve(self, size: int) -> None:
        for name, col in self._cols.items():
            if len(col) < size:
                grown = np.zeros(size, col.dtype)
                grown[: len(col)] = col
                self._cols[name] = grown

    def _rebuild_lookups(self) -> None:
        ids = np.flatnonzero(self._cols["present"]).astype(np.int64)
        self._by_plate.rebuild(self._cols["plate_hash"][ids].astype(np.uint64), ids)
        self._by_vin.rebuild(self._cols["vin_hash"][ids].astype(np.uint64), ids)

    # -- reading -----------------------------------------------------------------------------
    def by_plate(self, plate_type: str, plate_number: str) -> VehicleRecord | None:
        with self._lock:
            want = plate_number.encode()
            for i in self._by_plate.candidates(_plate_key(plate_type, plate_number)):
                cols = self._cols
                if cols["plate"][i] == want and cols["plate_type"][i] == int(plate_type):
                    return self._record(i)
        return None

    def by_vin(self, vin: str) -> VehicleRecord | None:
        with self._lock:
            for i in self._by_vin.candidates(vin):
                if self._cols["vin"][i] == vin.encode():
                    return self._record(i)
        return None

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revoked

    def _record(self, i: int) -> VehicleRecord:
        c = self._cols
        valid_until = int(c["valid_until"][i])
        return VehicleRecord(
            vehicle_id=i,
            plate_type=f"{int(c['plate_type'][i]):02d}",
            plate_number=bytes(c["plate"][i]).decode(),
            vin=bytes(c["vin"][i]).decode(),
            category=_CATEGORIES[int(c["category"][i])],
            registered_on=dt.date.fromordinal(int(c["registered"][i])),
            seats=int(c["seats"][i]),
            exemption_lost=bool(c["exemption_lost"][i]),
            status_bits=int(c["status"][i]),
            valid_until=valid_until or None,
            current_serial=int(c["serial"][i]),
        )

    def __len__(self) -> int:
        return self._count

    def nbytes(self) -> int:
        """Bytes held by the index's arrays and lookups (the per-vehicle cost, measured)."""
        used = len(self._cols["present"])
        per_slot = sum(col.itemsize for col in self._cols.values())
        return used * per_slot + self._by_plate.nbytes + self._by_vin.nbytes + 60 * len(self._revoked)

    def checksum(self) -> str:
        """A digest of the contents: two indexes with the same vehicles and revocations agree."""
        with self._lock:
            digest = hashlib.sha256()
            ids = np.flatnonzero(self._cols["present"])
            digest.update(ids.astype(np.int64).tobytes())
            for name in sorted(_COLUMNS):
                digest.update(np.ascontiguousarray(self._cols[name][ids]).tobytes())
            digest.update(np.array(sorted(self._revoked), np.uint64).tobytes())
            digest.update(str(self.last_change_id).encode())
            return digest.hexdigest()
