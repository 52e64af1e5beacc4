"""Keeping a server's derived state current: the key ring from the key directory, the validity
index from the store's change log."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vimark.client.domain import Clock, system_clock
from vimark.client.trust import TrustList
from vimark.server import index_checkpoint as checkpoint
from vimark.server.index import ValidityIndex, return_freed_memory
from vimark.server.index_text import TextOnFile, TextSpool
from vimark.server.issuer import Signer
from vimark.server.keys import KeyDirectory, KeyRing
from vimark.server.metrics import Metrics
from vimark.server.store import Store

log = logging.getLogger("vimark.server")
_PAGE = 20_000  # change-log rows per query (a bulk import's batch is at most 10,000)
_SNAPSHOT_CHUNK = 20_000  # vehicles per chunk at start: a chunk's Python values are the peak's overhead
_OVERLAY_FOLD = 100_000  # changed vehicles' text held in memory before a checkpoint is hurried


def replay_limit(vehicles: int) -> int:
    """Changes a start replays after a checkpoint at most: beyond a million, or half the
    vehicles, reading the store is faster (measured: 1 M changes replayed in bulk took 1.7 times
    a full read of a 1 M-vehicle store)."""
    return max(1_000_000, vehicles // 2)


@dataclass(frozen=True)
class CheckpointConfig:
    """Where the index's checkpoint lives and when one is used or written (index_checkpoint.py)."""

    directory: Path
    max_age: dt.timedelta = dt.timedelta(days=7)  # an older one is ignored: the store is read
    every: float = 600.0  # seconds between checkpoints while changes come (and one at shutdown)

    @property
    def path(self) -> Path:
        return self.directory / checkpoint.FILE_NAME


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

    def __init__(
        self,
        store: Store,
        index: ValidityIndex,
        metrics: Metrics,
        checkpoints: CheckpointConfig | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        self.index = index
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.clock = clock
        self.ready = False
        self.loaded_from = ""  # "checkpoint" or "store", once loaded
        self._checkpoint_lock = threading.Lock()
        self._checkpointed: tuple[int, float] = (-1, 0.0)  # change id and monotonic time of the last
        self._lock = threading.Lock()
        # Catch-up passes started and the latest one finished (numbered 1, 2, ...; see catch_up).
        self._passes_started = 0
        self._passes_done = 0
        self._synced_at = time.monotonic()
        # Kept as the index changes (reading it costs nothing): replicas and a rebuild compare it.
        metrics.index_checksum.set_function(lambda: int(index.checksum()[:13], 16))

    def load(self) -> None:
        """From the checkpoint when there is a usable one, else from the store (writing a
        checkpoint as it goes); then the change log after it."""
        started = time.perf_counter()
        if self.checkpoints is not None and self._load_checkpoint(self.checkpoints):
            self.loaded_from = "checkpoint"
        else:
            self._load_store()
            self.loaded_from = "store"
        loaded = time.perf_counter()
        return_freed_memory()
        self.ready = True
        self.catch_up()
        log.info(
            "index loaded from the %s: %d vehicles in %.2fs, then the change log to %d in %.2fs",
            self.loaded_from,
            len(self.index),
            loaded - started,
            self.index.last_change_id,
            time.perf_counter() - loaded,
        )

    def _load_checkpoint(self, config: CheckpointConfig) -> bool:
        store_id = self.store.identity()
        first, last = self.store.change_log_span()
        now = self.clock().timestamp()

        def accept(header: checkpoint.Header) -> None:
            if header.store_id != store_id:
                raise checkpoint.CheckpointRefused(f"written for another database ({header.store_id})")
            if header.change_id > last:
                raise checkpoint.CheckpointRefused(
                    f"ahead of the change log (change {header.change_id}, log at {last})"
                )
            if first > header.change_id + 1:
                raise checkpoint.CheckpointRefused(
                    f"too old: change {header.change_id} is no longer in the change log (it starts at {first})"
                )
            behind = last - header.change_id
            if behind > replay_limit(header.count):
                raise checkpoint.CheckpointRefused(f"{behind:,} changes behind the log: reading the store is faster")
            if self.store.change_fingerprint(header.change_id) != header.change_fingerprint:
                raise checkpoint.CheckpointRefused(
                    f"change {header.change_id} in the log is not the one it reflects (the log was restored?)"
                )
            if now - header.made_at > config.max_age.total_seconds():
                hours = (now - header.made_at) / 3600
                raise checkpoint.CheckpointRefused(
                    f"too old: written {hours:.1f} h ago, the limit is {config.max_age.total_seconds() / 3600:g} h"
                )

        text = None
        try:
            loaded = checkpoint.read(config.path, accept, frozenset({"text"}))
            text = TextOnFile(config.path, *loaded.on_file["text"], loaded.fd)
            self.index.restore(loaded.header.change_id, loaded.arrays, text)
        except (checkpoint.CheckpointRefused, ValueError, KeyError, OSError) as exc:
            if text is not None:
                text.close()
            log.warning("index checkpoint %s not used: %s; reading the store instead", config.path, exc)
            return False
        self._checkpointed = (loaded.header.change_id, time.monotonic())
        return True

    def _load_store(self) -> None:
        spool = None
        if self.checkpoints is not None:
            self.checkpoints.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            spool = TextSpool(self.checkpoints.directory / f".text.{os.getpid()}.spool")
        with self.store.snapshot_chunks(_SNAPSHOT_CHUNK) as snapshot:  # streamed: no record per vehicle
            self.index.load_snapshot(snapshot, text=spool)
        if spool is not None:
            try:
                self.write_checkpoint()
            finally:
                spool.close()

    def write_checkpoint(self) -> bool:
        """Write the index's checkpoint now (a start reads it), then read the text from it.
        Returns False, having logged why, when it could not be written."""
        config = self.checkpoints
        if config is None:
            return False
        with self._checkpoint_lock:
            started = time.perf_counter()
            change_id, count, sections, overlay = self.index.checkpoint_sections()
            header = checkpoint.Header(
                self.store.identity(),
                change_id,
                self.store.change_fingerprint(change_id),
                self.clock().timestamp(),
                count,
            )
            try:
                size, offsets, reader = checkpoint.write(config.path, header, sections)
            except OSError as exc:
                log.error("index checkpoint %s not written: %s", config.path, exc)
                if isinstance(self.index.text_source(), TextSpool):  # serve the text from the spool itself
                    spool = self.index.text_source()
                    assert isinstance(spool, TextSpool)
                    self.index.use_text(TextOnFile(spool.path, 0, spool.written))
                return False
            text = next(s for s in sections if s.name == "text")
            self.index.use_text(TextOnFile(config.path, offsets["text"], text.items, reader), overlay)
            self._checkpointed = (change_id, time.monotonic())
            log.info(
                "index checkpoint written: change %d, %d vehicles, %.0f MB in %.2fs",
                change_id,
                count,
                size / 1e6,
                time.perf_counter() - started,
            )
            return True

    def checkpoint_if_due(self, every: float | None = None) -> None:
        """A checkpoint when the index changed since the last and `every` seconds (default the
        configured interval) have passed."""
        if self.checkpoints is None or not self.ready:
            return
        change_id, at = self._checkpointed
        wait = self.checkpoints.every if every is None else every
        if self.index.text_overlay_size() > max(_OVERLAY_FOLD, len(self.index) // 16):
            wait = min(wait, 30.0)  # a bulk import's text: folded into the file soon, not held in memory
        if self.index.last_change_id != change_id and time.monotonic() - at >= wait:
            self.write_checkpoint()

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
            self._apply_log()
            self._passes_done = this_pass  # only a pass that finished covers its waiters
            self._synced_at = time.monotonic()
            self._record()

    def _apply_log(self) -> None:
        """The change log after the index, a page at a time, each applied at once as columns (a
        bulk import's batch costs one query, not a record per vehicle). A short page is the end of
        the log as committed when it was read. Far behind (a bulk import, an old checkpoint), the
        new keys are indexed once at the end rather than one page at a time."""
        far_behind = False
        while True:
            read, last, vehicles, revoked = self.store.change_columns_since(self.index.last_change_id, _PAGE)
            if read:
                self.index.apply_columns(last, vehicles, revoked, track=not far_behind)
            if read < _PAGE:
                break
            far_behind = True
        if far_behind:
            self.index.rebuild_lookups()

    def _record(self) -> None:
        self.metrics.index_vehicles.set(len(self.index))
        self.metrics.index_change_id.set(self.index.last_change_id)
        self.metrics.index_bytes.set(self.index.nbytes())

    def sync_age(self) -> float:
        return time.monotonic() - self._synced_at
