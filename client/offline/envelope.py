"""Signed envelopes: how a terminal knows its trust bundle and status data are vimark's.

Roles as TUF separates them: the trust anchor (kept offline) signs only online-key certificates;
the online key (on the server) signs only bundles, snapshots and deltas. A terminal is
provisioned with the anchor's public key(s) and trusts nothing else. Every signature is over a
domain tag + the bytes, so no signed thing can pass for another kind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from vimark.client.errors import VimarkError
from vimark.client.trust import ALGORITHM, PUBLIC_KEY_SIZE, verify_signature
from vimark.v1 import terminal_service_pb2 as tpb

ONLINE_KEY = "online-key"
TRUST_BUNDLE = "trust-bundle"
STATUS_SNAPSHOT = "status-snapshot"
STATUS_DELTA = "status-delta"
KINDS = (ONLINE_KEY, TRUST_BUNDLE, STATUS_SNAPSHOT, STATUS_DELTA)
MAX_ANCHOR_FILE_BYTES = 64 * 1024  # a few hex keys and comments
MAX_AGE_SECONDS = 366 * 86400  # far above any maximum age a terminal counts (72 h, 24 h)


class OfflineDataRefused(VimarkError):
    """A bundle, snapshot or delta that is not vimark's as it was signed: the message says why."""

    reason = "OFFLINE_DATA_REFUSED"
    code = "FAILED_PRECONDITION"


def signed_bytes(kind: str, data: bytes) -> bytes:
    """What a signature covers: b"vimark/v1/<kind>\\x00" + data."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return b"vimark/v1/" + kind.encode() + b"\x00" + data


def read_anchors(path: Path) -> tuple[bytes, ...]:
    """The trust-anchor public keys a terminal is provisioned with: one hex key per line, '#'
    comments. More than one during an anchor rotation (old and new both trusted)."""
    try:
        if path.stat().st_size > MAX_ANCHOR_FILE_BYTES:
            raise OfflineDataRefused(f"the trust anchor file {path} is over {MAX_ANCHOR_FILE_BYTES} bytes")
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as exc:  # missing, a directory in its place, no permission
        raise OfflineDataRefused(f"cannot read the trust anchor file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise OfflineDataRefused(f"the trust anchor file {path} is not UTF-8 text (hex keys, one a line)") from None
    keys = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != PUBLIC_KEY_SIZE:
            raise OfflineDataRefused(f"{path}:{number}: not a {PUBLIC_KEY_SIZE}-byte hex Ed25519 public key")
        keys.append(key)
    if not keys:
        raise OfflineDataRefused(f"{path} names no trust anchor key")
    return tuple(keys)


@dataclass(frozen=True)
class OnlineKeyInfo:
    key_id: int
    public_key: bytes
    start: dt.datetime
    end: dt.datetime


def instant(ts: Timestamp) -> dt.datetime:
    """A signed time; one no datetime can hold is refused (it comes off a network)."""
    try:
        return ts.ToDatetime(dt.UTC)
    except (ValueError, OverflowError):
        raise OfflineDataRefused("a time in the offline data is out of range") from None


def age(seconds: int) -> dt.timedelta:
    """A signed maximum age; a negative or absurd one is refused (a terminal caps it anyway)."""
    if not 0 <= seconds <= MAX_AGE_SECONDS:
        raise OfflineDataRefused(f"a maximum age of {seconds} s is not between 0 and {MAX_AGE_SECONDS} s")
    return dt.timedelta(seconds=seconds)


def timestamp(at: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(dt.UTC))
    return ts


def open_envelope(data: bytes, kind: str, anchors: Sequence[bytes]) -> tuple[bytes, OnlineKeyInfo]:
    """The payload of a signed envelope of `kind`, and the online key that signed it, once both
    signatures hold. Raises OfflineDataRefused naming the first check that fails."""
    # 1. The form.
    envelope = tpb.SignedEnvelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError:
        raise OfflineDataRefused(f"the {kind} is not a signed envelope (damaged or not vimark's)") from None
    # 2. The online key, certified by a trust anchor we were provisioned with.
    certificate = envelope.signer
    certified = signed_bytes(ONLINE_KEY, certificate.online_key)
    if not any(verify_signature(a, certificate.anchor_signature, certified) for a in anchors):
        raise OfflineDataRefused(
            f"the {kind} is not signed through the trust anchor: its online key's certificate does not verify"
        )
    online = tpb.OnlineKey()
    try:
        online.ParseFromString(certificate.online_key)
    except DecodeError:
        raise OfflineDataRefused("the online key's certificate is damaged") from None
    if online.algorithm != ALGORITHM or len(online.public_key) != PUBLIC_KEY_SIZE:
        raise OfflineDataRefused(f"the online key is not an {ALGORITHM} key")
    # 3. The payload, signed by that online key as this kind.
    if not verify_signature(online.public_key, envelope.signature, signed_bytes(kind, envelope.payload)):
        raise OfflineDataRefused(f"the {kind} has been altered (or is not a {kind}): its signature does not verify")
    info = OnlineKeyInfo(online.key_id, online.public_key, instant(online.start_time), instant(online.end_time))
    return envelope.payload, info


def check_signed_within(info: OnlineKeyInfo, made_at: dt.datetime, kind: str) -> None:
    """4. The online key's certificate covers the moment the payload says it was made."""
    if not info.start <= made_at <= info.end:
        raise OfflineDataRefused(
            f"the {kind} was made at {made_at:%Y-%m-%d %H:%M} UTC, outside its online key {info.key_id}'s "
            f"certificate ({info.start:%Y-%m-%d %H:%M} to {info.end:%Y-%m-%d %H:%M} UTC)"
        )
