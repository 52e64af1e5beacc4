"""Building police terminals' signed data from the store: the trust bundle, the status snapshot
and deltas between snapshot versions (formats: client/offline/, docs/offline-format.md).

Each serial's bit is the server's own judging input, as the verifier computes it: the vehicle
holding the mark's *signed* plate now, its current serial and VIN. The store gives each covered
mark's class by SQL joins (store/terminal.py), streamed into arrays; a snapshot is built and
signed in a background thread, never under a lock a request waits on, and requests are served
the latest built version. Recent versions are kept so a terminal can be sent only what changed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from vimark.client import certificate as cert
from vimark.client.domain import BLOCKS_ROAD_MASK, POLICE_ALERT_MASK, Clock, china_date, month_of
from vimark.client.errors import CertificateError
from vimark.client.offline.bundle import DEFAULT_BUNDLE_MAX_AGE, TrustBundle
from vimark.client.offline.codec import plate_key
from vimark.client.offline.envelope import STATUS_DELTA, STATUS_SNAPSHOT, TRUST_BUNDLE
from vimark.client.offline.status import DEFAULT_STATUS_MAX_AGE, NO_CHANGE, Diff, StatusState, delta_message
from vimark.client.trust import TrustList
from vimark.server.store import Store
from vimark.server.store.terminal import CURRENT, UNKNOWN_VEHICLE, SignedPlate, StatusFacts
from vimark.server.terminal_keys import OnlineSigner

log = logging.getLogger("vimark.server")
HOTLIST_MASK = BLOCKS_ROAD_MASK | POLICE_ALERT_MASK
# A terminal holding a version built within this span gets a delta; older ones download in full.
# Only the diffs between consecutive versions are kept (a day of a province's changes is a few MB).
HISTORY = dt.timedelta(hours=72)
MAX_VERSIONS = 20_000
# How long a request waits for a build in progress before it is served the latest one built
# (a small store's build takes milliseconds, so its terminals see every change at once).
BUILD_WAIT = dt.timedelta(seconds=2)


def signed_plate_reader(seal_keys: Mapping[int, bytes]) -> SignedPlate:
    """Reads the plate and VIN a mark's QR text signs (for marks stored without them)."""

    def read(qr_text: str) -> tuple[str, str, str] | None:
        try:
            body = cert.decode(qr_text, dict(seal_keys)).body
        except CertificateError:
            return None
        return body.plate_type, body.plate_number, body.vin

    return read


def build_state(facts: StatusFacts, made_at: dt.datetime, max_age: dt.timedelta) -> StatusState:
    first = facts.first_serial
    serials = facts.serials
    count = int(serials[-1]) - first + 1 if len(serials) else 0
    current = np.zeros(count, np.bool_)
    current[serials[facts.classes == CURRENT] - first] = True
    # Serials of the range with no mark row (not committed when read, or rolled back): every gap
    # between consecutive rows, not only the first, so the range is never cut short.
    holes = np.flatnonzero(np.diff(serials) > 1)
    missing = frozenset(s for i in holes.tolist() for s in range(int(serials[i]) + 1, int(serials[i + 1])))
    return StatusState.build(
        change_id=facts.change_id,
        made_at=made_at,
        max_age=max_age,
        first_serial=first,
        current=current,
        revoked=facts.revoked,
        unknown_vehicle=frozenset(serials[facts.classes == UNKNOWN_VEHICLE].tolist()),
        hotlist={plate_key(t, n): bits for (t, n), bits in facts.hotlist.items()},
        missing=missing,
    )


@dataclass(frozen=True)
class _Version:
    change_id: int
    digest: bytes
    made_at: dt.datetime
    diff: Diff  # from the version built before it
    restart: bool = False  # not a later state of the one before: forget the versions before it


@dataclass(frozen=True)
class Signed:
    state: StatusState
    envelope: bytes  # the signed full snapshot


class TerminalData:
    """What TerminalService hands out, built from the store and signed by the online key."""

    def __init__(
        self,
        store: Store,
        trust: Callable[[], TrustList],
        signer: Callable[[], OnlineSigner],
        clock: Clock,
        *,
        refresh: dt.timedelta = dt.timedelta(minutes=1),
        bundle_max_age: dt.timedelta = DEFAULT_BUNDLE_MAX_AGE,
        status_max_age: dt.timedelta = DEFAULT_STATUS_MAX_AGE,
    ) -> None:
        self.store = store
        self.trust = trust
        self.signer = signer
        self.clock = clock
        self.refresh = refresh  # a snapshot younger than this is served again, not rebuilt
        self.bundle_max_age = bundle_max_age
        self.status_max_age = status_max_age
        self._lock = threading.Lock()  # guards the fields below; held only briefly, never for a build
        self._building: threading.Event | None = None  # set when the build in progress ends
        self._error: Exception | None = None  # the last build's failure, if it failed
        self._history: list[_Version] = []  # oldest first; the last is the latest build's
        self._latest: Signed | None = None

    def bundle(self) -> bytes:
        now = self.clock()
        payload = TrustBundle(self.trust(), now, self.bundle_max_age).to_message().SerializeToString(deterministic=True)
        return self.signer().sign(TRUST_BUNDLE, payload, now)

    def snapshot(self) -> Signed:
        """The latest signed snapshot. One older than `refresh` starts a build in the background;
        the request waits for it up to BUILD_WAIT (the first one until it is done), then is
        served the latest built."""
        latest = self._latest
        if latest is not None and self.clock() - latest.state.made_at < self.refresh:
            return latest
        done = self._start_build()
        done.wait(None if latest is None else BUILD_WAIT.total_seconds())
        with self._lock:
            if self._latest is None:
                raise self._error or RuntimeError("the status snapshot is not built")
            return self._latest

    def _start_build(self) -> threading.Event:
        with self._lock:
            if self._building is None:
                self._building = threading.Event()
                threading.Thread(target=self._build, args=(self._building,), name="status-build", daemon=True).start()
            return self._building

    def _build(self, done: threading.Event) -> None:
        try:
            now = self.clock()
            trust = self.trust()
            facts = self.store.status_facts(
                month_of(china_date(now)), HOTLIST_MASK, signed_plate_reader(trust.seal_keys)
            )
            state = build_state(facts, now, self.status_max_age)
            payload = state.to_message().SerializeToString(deterministic=True)
            signed = Signed(state, self.signer().sign(STATUS_SNAPSHOT, payload, now))
            previous = self._latest.state if self._latest is not None else None  # only builds replace it
            version = self._version(previous, state)  # the diff, outside the lock too
            with self._lock:
                self._latest = signed
                self._error = None
                self._remember(version)
        except Exception as exc:  # kept for the requests waiting on it: the store down, no online key
            log.warning("status snapshot not built (terminals get the last one built, if any): %s", exc)
            with self._lock:
                self._error = exc
        finally:
            with self._lock:
                self._building = None
            done.set()

    @staticmethod
    def _version(previous: StatusState | None, state: StatusState) -> _Version | None:
        """What to remember of a new build: None when its contents are the same as the last one's
        (terminals holding it get an empty delta)."""
        if previous is not None and previous.digest() == state.digest():
            return None
        try:
            diff = previous.diff(state) if previous is not None else NO_CHANGE
        except ValueError:  # not a later state of the same store (e.g. restored from a backup)
            return _Version(state.change_id, state.digest(), state.made_at, NO_CHANGE, restart=True)
        return _Version(state.change_id, state.digest(), state.made_at, diff)

    def _remember(self, version: _Version | None) -> None:
        if version is None:
            return
        if version.restart:
            self._history.clear()
        self._history.append(version)
        while len(self._history) > MAX_VERSIONS or version.made_at - self._history[0].made_at > HISTORY:
            self._history.pop(0)

    def delta(self, since_change_id: int, since_digest: bytes) -> bytes | None:
        """A signed delta from the terminal's version to the newest, or None when that version is
        not kept here (or its digest differs): the terminal downloads the full snapshot."""
        self.snapshot()
        with self._lock:  # the latest and the history it ends, together
            assert self._latest is not None
            latest = self._latest.state
            held = [i for i, v in enumerate(self._history) if v.digest == since_digest]
            if not held or self._history[held[-1]].change_id != since_change_id:
                return None
            versions = self._history[held[-1] + 1 :]
        diff = NO_CHANGE
        for version in versions:
            diff = diff.then(version.diff)
        payload = delta_message(since_change_id, since_digest, latest, diff).SerializeToString(deterministic=True)
        return self.signer().sign(STATUS_DELTA, payload, latest.made_at)
