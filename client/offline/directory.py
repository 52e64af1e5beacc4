"""A police terminal's offline data directory: what `vimark terminal sync DIR` keeps.

    DIR/anchor.pub            the trust anchor key(s), provisioned (hex, one per line)
    DIR/trust-bundle.signed   the signed trust bundle (SignedEnvelope)
    DIR/status.held           the status held (HeldStatus): the last full signed snapshot, or the
                              signed delta last applied with the snapshot it made (whose content
                              digest, times included, that delta signs)

Each file is replaced in one atomic, fsynced step, so a terminal switched off mid-sync keeps
either what it held or what it fetched, never a mix. Files are the user's only (0600, DIR 0700).
Everything read is checked again on every load: a file changed on the terminal is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

from google.protobuf.message import DecodeError

from vimark.client.offline.bundle import TrustBundle
from vimark.client.offline.envelope import (
    STATUS_DELTA,
    STATUS_SNAPSHOT,
    TRUST_BUNDLE,
    OfflineDataRefused,
    check_signed_within,
    instant,
    open_envelope,
    read_anchors,
)
from vimark.client.offline.status import StatusState
from vimark.v1 import terminal_service_pb2 as tpb

ANCHOR_FILE = "anchor.pub"
BUNDLE_FILE = "trust-bundle.signed"
STATUS_FILE = "status.held"
MAX_FILE_BYTES = 256 * 1024 * 1024  # far above a province's snapshot (about 10 MB): refused unread


def open_bundle(data: bytes, anchors: tuple[bytes, ...]) -> TrustBundle:
    payload, key = open_envelope(data, TRUST_BUNDLE, anchors)
    bundle = TrustBundle.from_payload(payload)
    check_signed_within(key, bundle.made_at, TRUST_BUNDLE)
    return dataclasses.replace(bundle, signer_until=key.end)


def open_snapshot(data: bytes, anchors: tuple[bytes, ...]) -> StatusState:
    payload, key = open_envelope(data, STATUS_SNAPSHOT, anchors)
    state = StatusState.from_payload(payload)
    check_signed_within(key, state.made_at, STATUS_SNAPSHOT)
    return dataclasses.replace(state, signer_until=key.end)


def open_delta(data: bytes, anchors: tuple[bytes, ...]) -> tuple[tpb.StatusDelta, dt.datetime]:
    """The signed delta, and when its online key's certificate ends."""
    payload, key = open_envelope(data, STATUS_DELTA, anchors)
    delta = tpb.StatusDelta()
    try:
        delta.ParseFromString(payload)
    except DecodeError:
        raise OfflineDataRefused("the status delta is damaged") from None
    check_signed_within(key, instant(delta.make_time), STATUS_DELTA)
    return delta, key.end


class TerminalDirectory:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def anchors(self) -> tuple[bytes, ...]:
        return read_anchors(self.path / ANCHOR_FILE)

    def provision(self, anchor_file: Path) -> None:
        """Keep a copy of the trust anchor file (first sync)."""
        read_anchors(anchor_file)  # refuse a bad one before keeping it
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write(ANCHOR_FILE, anchor_file.read_bytes())

    def _read(self, name: str) -> bytes:
        path = self.path / name
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise OfflineDataRefused(f"{path} is over {MAX_FILE_BYTES} bytes: not offline data vimark wrote")
            return path.read_bytes()
        except FileNotFoundError:
            hint = f"run `vimark terminal sync {self.path}` while online"
            raise OfflineDataRefused(f"no {name} in {self.path}: {hint}") from None
        except OSError as exc:  # a directory in its place, no permission, a disk error
            raise OfflineDataRefused(f"cannot read {path}: {exc.strerror or exc}") from None

    def _write(self, name: str, data: bytes) -> None:
        """Replace `name` atomically and durably: the bytes reach the disk before the rename, and
        the rename before we return (a power cut leaves the old file or the new one)."""
        tmp = self.path / (name + ".tmp")
        tmp.unlink(missing_ok=True)  # so it is created 0600 whatever a leftover's mode was
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path / name)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- reading -------------------------------------------------------------------------------
    def bundle(self) -> TrustBundle:
        return open_bundle(self._read(BUNDLE_FILE), self.anchors())

    def held_bundle(self) -> TrustBundle | None:
        """The bundle held now, or None when there is none (or it no longer checks)."""
        try:
            return self.bundle()
        except OfflineDataRefused:
            return None

    def status(self) -> StatusState:
        anchors = self.anchors()
        held = tpb.HeldStatus()
        try:
            held.ParseFromString(self._read(STATUS_FILE))
        except DecodeError:
            raise OfflineDataRefused(f"{self.path / STATUS_FILE} is damaged") from None
        if held.WhichOneof("held") == "signed_snapshot":
            return open_snapshot(held.signed_snapshot, anchors)
        if held.WhichOneof("held") != "delta_applied":
            raise OfflineDataRefused(f"{self.path / STATUS_FILE} holds no status")
        delta, signer_until = open_delta(held.delta_applied.signed_delta, anchors)
        state = StatusState.from_payload(held.delta_applied.state)
        signed = (delta.to_change_id, delta.to_digest, instant(delta.make_time), delta.max_age_seconds)
        if (state.change_id, state.digest(), state.made_at, int(state.max_age.total_seconds())) != signed:
            raise OfflineDataRefused(f"{self.path / STATUS_FILE} is not the snapshot the last delta signed")
        return dataclasses.replace(state, signer_until=signer_until)

    def held_status(self) -> StatusState | None:
        """The status held now, or None when there is none (or it no longer checks)."""
        try:
            return self.status()
        except OfflineDataRefused:
            return None

    # -- storing (each checked before it is kept) -----------------------------------------------
    def store_bundle(self, data: bytes) -> TrustBundle:
        bundle = open_bundle(data, self.anchors())
        held = self.held_bundle()  # one that no longer checks is simply replaced
        if held is not None:
            _not_older(bundle.made_at, held.made_at, "trust bundle")
        self._write(BUNDLE_FILE, data)
        return bundle

    def store_snapshot(self, data: bytes) -> StatusState:
        state = open_snapshot(data, self.anchors())
        held = self.held_status()
        if held is not None:
            _not_older(state.made_at, held.made_at, "status snapshot")
        self._write(STATUS_FILE, tpb.HeldStatus(signed_snapshot=data).SerializeToString())
        return state

    def apply_delta(self, data: bytes) -> StatusState:
        """Apply a signed delta to the status held. Raises DeltaDoesNotApply (download the full
        snapshot) or OfflineDataRefused; either way what was held is kept."""
        delta, signer_until = open_delta(data, self.anchors())
        held = self.status()
        state = dataclasses.replace(held.apply(delta), signer_until=signer_until)
        _not_older(state.made_at, held.made_at, "status delta")
        applied = tpb.DeltaApplied(signed_delta=data, state=state.to_message().SerializeToString(deterministic=True))
        self._write(STATUS_FILE, tpb.HeldStatus(delta_applied=applied).SerializeToString())
        return state


def _not_older(made_at: dt.datetime, held: dt.datetime, what: str) -> None:
    """A terminal never goes back to older signed data than it holds: a replayed old snapshot
    would hide a car reported stolen since."""
    if made_at < held:
        raise OfflineDataRefused(
            f"the {what} was made at {made_at:%Y-%m-%d %H:%M} UTC, before the one held ({held:%Y-%m-%d %H:%M} UTC)"
        )
