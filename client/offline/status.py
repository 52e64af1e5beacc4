"""The status snapshot a police terminal holds: which serials are current, which revoked, which
name a plate no vehicle holds, and the hotlist of blocked or flagged vehicles by plate.

Why this encoding (measured by `python -m load.offline`, load/README.md): serials are handed out
in order, so the serials a snapshot must know (those within their validity month, and every
vehicle's current one) fill one dense range. One bit per serial of that range says "current";
that is within 9% of the entropy of a 2:1 current/superseded split (0.92 bit) with O(1) lookups
and no false answers, where a filter cascade needs more than a bit per element at that ratio. The
rare classes (revoked, plate given up) are explicit sorted lists, and the hotlist sorted plates,
xz-compressed. A delta lists the positions whose bit flipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from vimark.client.errors import VimarkError
from vimark.client.offline import codec
from vimark.client.offline.envelope import OfflineDataRefused, age, instant, timestamp
from vimark.v1 import terminal_service_pb2 as tpb

DEFAULT_STATUS_MAX_AGE = dt.timedelta(hours=24)
# A terminal never relies on status data longer than this, whatever max_age it was signed with: a
# leaked online key must not be able to sign data that never goes stale.
MAX_STATUS_MAX_AGE = DEFAULT_STATUS_MAX_AGE
# A range far beyond any province's serials (60 M within validity): refused before allocating, so
# damaged or hostile data cannot make a terminal allocate more than a few hundred MB.
MAX_SERIAL_COUNT = 1 << 28
MAX_FLIPS_BYTES = 64 * 1024 * 1024  # a delta's flipped positions, decompressed (100,000 changes: ~0.3 MB)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def micros(at: dt.datetime) -> int:
    """An instant as whole microseconds since 1970 (exact, as a Timestamp carries it)."""
    return (at - _EPOCH) // dt.timedelta(microseconds=1)


class DeltaDoesNotApply(VimarkError):
    """A delta for another version than the one held, or whose result is not what was signed."""

    reason = "DELTA_DOES_NOT_APPLY"
    code = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class Diff:
    """What changed between two versions of the status: composable, so a server keeps only the
    diffs between the versions it built and sends a terminal the one from its version."""

    flipped: npt.NDArray[np.int64]  # serials whose current bit flipped, ascending
    revoked_added: frozenset[int]
    hotlist_changes: Mapping[str, int]  # status bits 0: the plate left the hotlist

    def then(self, later: Diff) -> Diff:
        """This diff followed by `later` (a bit flipped twice is back)."""
        hotlist = dict(self.hotlist_changes)
        hotlist.update(later.hotlist_changes)
        flipped = np.setxor1d(self.flipped, later.flipped, assume_unique=True).astype(np.int64)
        return Diff(flipped, self.revoked_added | later.revoked_added, hotlist)


NO_CHANGE = Diff(np.zeros(0, np.int64), frozenset(), {})


@dataclass(frozen=True)
class StatusState:
    change_id: int
    made_at: dt.datetime
    max_age: dt.timedelta
    first_serial: int
    serial_count: int
    current_bits: bytes  # bit i, least significant first: serial first_serial + i is current
    revoked: frozenset[int]
    unknown_vehicle: frozenset[int]
    hotlist: Mapping[str, int]  # "<plate type>:<plate number>" -> status bits (blocked or flagged)
    # Serials of the range that had no mark row when the store was read: on PostgreSQL a serial is
    # taken before its transaction commits, so s+1 can be seen before s. Answered as "newer than
    # the status data", never SUPERSEDED (a rolled-back one stays missing for good).
    missing: frozenset[int] = frozenset()
    # When the online key that signed this data stops being certified (not signed, not in the
    # digest: set by the terminal from the envelope); None when not known (built on the server).
    signer_until: dt.datetime | None = field(default=None, compare=False)
    _digest: list[bytes] = field(default_factory=list, init=False, compare=False, repr=False)  # computed once

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        *,
        change_id: int,
        made_at: dt.datetime,
        max_age: dt.timedelta,
        first_serial: int,
        current: npt.NDArray[np.bool_],
        revoked: frozenset[int],
        unknown_vehicle: frozenset[int],
        hotlist: Mapping[str, int],
        missing: frozenset[int] = frozenset(),
    ) -> StatusState:
        """`current[i]`: serial first_serial + i is current (and not revoked)."""
        bits = np.packbits(current.astype(np.bool_), bitorder="little").tobytes()
        return cls(
            change_id,
            made_at,
            max_age,
            first_serial,
            len(current),
            bits,
            revoked,
            unknown_vehicle,
            dict(hotlist),
            missing,
        )

    # -- reading -------------------------------------------------------------------------------
    def covers(self, serial: int) -> bool:
        return self.first_serial <= serial < self.first_serial + self.serial_count

    def is_current(self, serial: int) -> bool:
        i = serial - self.first_serial
        return 0 <= i < self.serial_count and bool(self.current_bits[i >> 3] >> (i & 7) & 1)

    def status_bits(self, plate_type: str, plate_number: str) -> int:
        return self.hotlist.get(codec.plate_key(plate_type, plate_number), 0)

    def stale_since(self) -> dt.datetime:
        """made_at + max_age (at most MAX_STATUS_MAX_AGE), and never after the signing key's
        certificate ends."""
        since = self.made_at + min(self.max_age, MAX_STATUS_MAX_AGE)
        return since if self.signer_until is None else min(since, self.signer_until)

    def digest(self) -> bytes:
        """What a delta names: every field a terminal relies on, its times included (so a state
        file edited on the terminal cannot keep old data fresh)."""
        if not self._digest:
            head = (self.change_id, micros(self.made_at), int(self.max_age.total_seconds()))
            self._digest.append(
                codec.digest(
                    b"%d %d %d %d %d" % (*head, self.first_serial, self.serial_count),
                    self.current_bits,
                    codec.encode_gaps(sorted(self.revoked)),
                    codec.encode_gaps(sorted(self.unknown_vehicle)),
                    codec.hotlist_lines(self.hotlist),
                    codec.encode_gaps(sorted(self.missing)),
                )
            )
        return self._digest[0]

    # -- the wire ------------------------------------------------------------------------------
    def to_message(self) -> tpb.StatusSnapshot:
        return tpb.StatusSnapshot(
            change_id=self.change_id,
            make_time=timestamp(self.made_at),
            max_age_seconds=int(self.max_age.total_seconds()),
            first_serial=self.first_serial,
            serial_count=self.serial_count,
            current_bits=codec.compress(self.current_bits, preset=6),
            revoked_serials=codec.encode_gaps(sorted(self.revoked)),
            unknown_vehicle_serials=codec.encode_gaps(sorted(self.unknown_vehicle)),
            hotlist=codec.compress(codec.hotlist_lines(self.hotlist)),
            content_digest=self.digest(),
            missing_serials=codec.encode_gaps(sorted(self.missing)),
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> StatusState:
        m = tpb.StatusSnapshot()
        try:
            m.ParseFromString(payload)
        except DecodeError:
            raise OfflineDataRefused("the status snapshot is damaged") from None
        if m.serial_count > MAX_SERIAL_COUNT:
            raise OfflineDataRefused("the status snapshot's range is too large")
        bits = codec.decompress(m.current_bits, "current bits", limit=(m.serial_count + 7) // 8)
        if len(bits) != (m.serial_count + 7) // 8:
            raise OfflineDataRefused("the status snapshot's bits do not match its range")
        state = cls(
            m.change_id,
            instant(m.make_time),
            age(m.max_age_seconds),
            m.first_serial,
            m.serial_count,
            bits,
            frozenset(codec.decode_gaps(m.revoked_serials, "revoked serials")),
            frozenset(codec.decode_gaps(m.unknown_vehicle_serials, "unknown-vehicle serials")),
            codec.parse_hotlist(codec.decompress(m.hotlist, "hotlist"), "hotlist"),
            frozenset(codec.decode_gaps(m.missing_serials, "missing serials")),
        )
        if state.digest() != m.content_digest:
            raise OfflineDataRefused("the status snapshot's contents do not match its digest")
        return state

    # -- deltas --------------------------------------------------------------------------------
    def _bits_over(self, first: int, count: int) -> npt.NDArray[np.bool_]:
        """This state's current bits over another range (cleared outside this one's)."""
        mine = np.unpackbits(np.frombuffer(self.current_bits, np.uint8), bitorder="little", count=self.serial_count)
        out = np.zeros(count, np.bool_)
        lo, hi = max(first, self.first_serial), min(first + count, self.first_serial + self.serial_count)
        if lo < hi:
            out[lo - first : hi - first] = mine[lo - self.first_serial : hi - self.first_serial].astype(np.bool_)
        return out

    def diff(self, new: StatusState) -> Diff:
        """What changed from this state to `new`, a later one (ranges only move up, revocations
        are never undone: anything else is a bug, and raises ValueError)."""
        if not self.revoked <= new.revoked:
            raise ValueError("revocations are never undone")
        if new.first_serial < self.first_serial or new.top < self.top:
            raise ValueError("a later snapshot's range never moves down")
        mine = self._bits_over(new.first_serial, new.serial_count)
        theirs = np.unpackbits(np.frombuffer(new.current_bits, np.uint8), bitorder="little", count=new.serial_count)
        flipped = np.flatnonzero(mine != theirs.astype(np.bool_)).astype(np.int64) + new.first_serial
        changed = {k: b for k, b in new.hotlist.items() if self.hotlist.get(k) != b}
        changed.update({k: 0 for k in self.hotlist if k not in new.hotlist})
        return Diff(flipped, new.revoked - self.revoked, changed)

    @property
    def top(self) -> int:
        """One past the highest serial covered."""
        return self.first_serial + self.serial_count

    def delta_to(self, new: StatusState) -> tpb.StatusDelta:
        """What a terminal holding this state downloads to reach `new`."""
        return delta_message(self.change_id, self.digest(), new, self.diff(new))

    def apply(self, delta: tpb.StatusDelta) -> StatusState:
        """The state `delta` makes of this one. Raises DeltaDoesNotApply when it was made for
        another version, or its result is not the one it was signed for."""
        if delta.from_change_id != self.change_id or delta.from_digest != self.digest():
            raise DeltaDoesNotApply(
                f"the delta is from version {delta.from_change_id}, this terminal holds {self.change_id} "
                "(or another snapshot of it): download the full snapshot"
            )
        if delta.serial_count > MAX_SERIAL_COUNT:
            raise OfflineDataRefused("the delta's range is too large")
        bits = self._bits_over(delta.first_serial, delta.serial_count)
        limit = min(10 * delta.serial_count, MAX_FLIPS_BYTES)
        gaps = codec.decompress(delta.flipped_positions, "flipped positions", limit=limit)
        flips = np.asarray(codec.decode_gaps(gaps, "flipped positions"), np.int64)
        if len(flips) and int(flips[-1]) >= delta.serial_count:
            raise DeltaDoesNotApply("the delta flips a bit outside its range: download the full snapshot")
        bits[flips] ^= True
        hotlist = dict(self.hotlist)
        for key, status in codec.parse_hotlist(codec.decompress(delta.hotlist_changes, "hotlist"), "hotlist").items():
            if status:
                hotlist[key] = status
            else:
                hotlist.pop(key, None)
        new = StatusState.build(
            change_id=delta.to_change_id,
            made_at=instant(delta.make_time),
            max_age=age(delta.max_age_seconds),
            first_serial=delta.first_serial,
            current=bits,
            revoked=self.revoked | frozenset(codec.decode_gaps(delta.revoked_added, "revoked serials")),
            unknown_vehicle=frozenset(codec.decode_gaps(delta.unknown_vehicle_serials, "unknown-vehicle serials")),
            hotlist=hotlist,
            missing=frozenset(codec.decode_gaps(delta.missing_serials, "missing serials")),
        )
        if new.digest() != delta.to_digest:
            raise DeltaDoesNotApply("the snapshot after this delta is not the one signed: download the full snapshot")
        return new


def delta_message(from_change_id: int, from_digest: bytes, new: StatusState, diff: Diff) -> tpb.StatusDelta:
    """The delta from the version (`from_change_id`, `from_digest`) to `new`, given what changed
    (a server composes it from the diffs between the versions it built)."""
    inside = diff.flipped[(diff.flipped >= new.first_serial) & (diff.flipped < new.top)]
    return tpb.StatusDelta(
        from_change_id=from_change_id,
        from_digest=from_digest,
        to_change_id=new.change_id,
        to_digest=new.digest(),
        make_time=timestamp(new.made_at),
        max_age_seconds=int(new.max_age.total_seconds()),
        first_serial=new.first_serial,
        serial_count=new.serial_count,
        flipped_positions=codec.compress(codec.encode_positions(inside - new.first_serial), preset=6),
        revoked_added=codec.encode_gaps(sorted(diff.revoked_added)),
        unknown_vehicle_serials=codec.encode_gaps(sorted(new.unknown_vehicle)),
        hotlist_changes=codec.compress(codec.hotlist_lines(diff.hotlist_changes)),
        missing_serials=codec.encode_gaps(sorted(new.missing)),
    )
