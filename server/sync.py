"""Keeping a server's derived state current: the key ring from the key directory, the validity
index from the store's change log."""

from __future__ import annotations

import logging
import threading
import time

from vimark.client.trust import TrustList
from vimark.server.index import ValidityIndex
from vimark.server.issuer import Signer
from vimark.server.keys import KeyDirectory, KeyRing
from vimark.server.metrics import Metrics
from vimark.server.store import Store

log = logging.getLogger("vimark.server")
_PAGE = 5000  # change-log rows per query


class ReloadableKeyRing:
    """The key ring, reloaded when the key directory's manifest changes (rotation, revocation)."""

    def __init__(self, directory: KeyDirectory) -> None:
        self.directory = directory
        self._version = directory.manifest_version()
        self._ring = directory.load()
        self._trust = self._ring.trust_list()
        self.signer = Signer(self._ring)

    def ring(self) -> KeyRing:
        return self._ring

    def current(self) -> TrustList:
        return self._trust

    def refresh(self) -> None:
        version = self.directory.manifest_version()
        if version != self._version:
            self._version = version  # a damaged manifest is reported once, not at every poll
            ring = self.directory.load()
            self._ring, self._trust = ring, ring.trust_list()
            self.signer.replace(ring)
            log.info("key directory reloaded: active key %d, %d trusted", ring.active_key_id, len(ring.trusted))


class IndexFollower:
    """Loads the index from the store, then tails the change log: on every local write and
    every poll_interval in the background (which is how writes by other servers arrive)."""

    def __init__(self, store: Store, index: ValidityIndex, metrics: Metrics) -> None:
        self.store = store
        self.index = index
        self.metrics = metrics
        self.ready = False
        self._lock = threading.Lock()
        # Catch-up passes started and the latest one finished (numbered 1, 2, ...; see catch_up).
        self._passes_started = 0
        self._passes_done = 0
        self._synced_at = time.monotonic()
        # Computed when scraped (it reads the whole index): replicas and a rebuild compare it.
        metrics.index_checksum.set_function(lambda: int(index.checksum()[:13], 16))

    def load(self) -> None:
        started = time.perf_counter()
        with self.store.snapshot_chunks() as snapshot:  # streamed: no record per vehicle at start
            self.index.load_snapshot(snapshot)
        self.ready = True
        self._record()
        log.info("index loaded: %d vehicles in %.2fs", len(self.index), time.perf_counter() - started)

    def catch_up(self, at_least: int | None = None) -> None:
        """Apply the change log to the index.

        With `at_least` (the change id of a write just committed), return as soon as the index
        holds that change. Without it, apply every change committed before this call. Either way
        concurrent callers share passes: a caller that waited while a pass *started after its
        arrival* ran to completion is covered by it, so a burst of Issues costs a few change-log
        queries, not one each."""
        if not self.ready:  # the initial load will include these changes
            return
        if at_least is not None and self.index.last_change_id >= at_least:
            return
        arrived = self._passes_started
        with self._lock:
            if self._passes_done > arrived or (at_least is not None and self.index.last_change_id >= at_least):
                return
            self._passes_started += 1
            this_pass = self._passes_started
            while True:  # a short page is the end of the log as committed when it was read
                changes = self.store.changes_since(self.index.last_change_id, limit=_PAGE)
                self.index.apply(changes)
                if len(changes) < _PAGE:
                    break
            self._passes_done = this_pass  # only a pass that finished covers its waiters
            self._synced_at = time.monotonic()
            self._record()

    def _record(self) -> None:
        self.metrics.index_vehicles.set(len(self.index))
        self.metrics.index_change_id.set(self.index.last_change_id)
        self.metrics.index_bytes.set(self.index.nbytes())

    def sync_age(self) -> float:
        return time.monotonic() - self._synced_at
