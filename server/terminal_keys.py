"""The keys that sign police terminals' offline data, with roles separated as TUF does.

    ANCHOR_DIR/anchor.pem          the trust anchor's Ed25519 private key: kept offline; it signs
                                   online-key certificates and nothing else
    ANCHOR_DIR/anchor.pub          what terminals are provisioned with (hex; during an anchor
                                   rotation the new key and the retiring one, one per line)
    ONLINE_DIR/online.pem          the online key (on the server): signs bundles, snapshots, deltas
    ONLINE_DIR/online-key.signed   its certificate: a SignedOnlineKey, made by the anchor

`vimark keys anchor-init`, `anchor-rotate` and `online-rotate` make them (server/cli/serve.py).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vimark.client.domain import Clock, system_clock
from vimark.client.errors import FailedPrecondition, KeyStoreError
from vimark.client.offline.envelope import ONLINE_KEY, OnlineKeyInfo, instant, read_anchors, signed_bytes, timestamp
from vimark.client.trust import ALGORITHM
from vimark.v1 import terminal_service_pb2 as tpb

ANCHOR_KEY, ANCHOR_PUB = "anchor.pem", "anchor.pub"
ONLINE_PEM, ONLINE_CERT = "online.pem", "online-key.signed"
DEFAULT_ONLINE_LIFETIME = dt.timedelta(days=90)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except FileNotFoundError:
        raise KeyStoreError(f"no {path.name} in {path.parent}") from None
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"{path} is unreadable: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyStoreError(f"{path} is not an Ed25519 key")
    return key


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write-then-rename, private by default: a reader never sees half a key."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class AnchorDirectory:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def init(self) -> bytes:
        if (self.path / ANCHOR_KEY).exists():
            raise KeyStoreError(f"{self.path} already holds a trust anchor; use `vimark keys anchor-rotate`")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        _write(self.path / ANCHOR_KEY, _pem(key))
        _write(self.path / ANCHOR_PUB, _raw_public(key).hex().encode() + b"\n", 0o644)
        return _raw_public(key)

    def rotate(self) -> tuple[bytes, bytes]:
        """A new anchor; the old one stays in anchor.pub (retiring) so that terminals provisioned
        with the new file accept data certified by either until every online key is re-certified."""
        old = _load_private(self.path / ANCHOR_KEY)
        n = 1
        while (self.path / f"anchor-retired-{n}.pem").exists():
            n += 1
        _write(self.path / f"anchor-retired-{n}.pem", _pem(old))
        key = Ed25519PrivateKey.generate()
        _write(self.path / ANCHOR_KEY, _pem(key))
        lines = f"{_raw_public(key).hex()}\n{_raw_public(old).hex()}  # retiring\n"
        _write(self.path / ANCHOR_PUB, lines.encode(), 0o644)
        return _raw_public(old), _raw_public(key)

    def public_keys(self) -> tuple[bytes, ...]:
        return read_anchors(self.path / ANCHOR_PUB)

    def certify(self, online: tpb.OnlineKey) -> tpb.SignedOnlineKey:
        data = online.SerializeToString(deterministic=True)
        signature = _load_private(self.path / ANCHOR_KEY).sign(signed_bytes(ONLINE_KEY, data))
        return tpb.SignedOnlineKey(online_key=data, anchor_signature=signature)


@dataclass(frozen=True)
class OnlineSigner:
    """The server's online key: signs terminal data as `kind`, with its anchor certificate."""

    private: Ed25519PrivateKey
    certificate: tpb.SignedOnlineKey
    info: OnlineKeyInfo

    def sign(self, kind: str, payload: bytes, at: dt.datetime) -> bytes:
        if not self.info.start <= at <= self.info.end:
            raise FailedPrecondition(
                f"online key {self.info.key_id}'s certificate ended {self.info.end:%Y-%m-%d %H:%M} UTC: "
                "run `vimark keys online-rotate`",
                reason="NO_ONLINE_KEY",
            )
        envelope = tpb.SignedEnvelope(
            payload=payload, signature=self.private.sign(signed_bytes(kind, payload)), signer=self.certificate
        )
        return envelope.SerializeToString(deterministic=True)


class OnlineKeyDirectory:
    def __init__(self, path: Path | str, clock: Clock = system_clock) -> None:
        self.path = Path(path)
        self.clock = clock

    def rotate(self, anchor: AnchorDirectory, lifetime: dt.timedelta = DEFAULT_ONLINE_LIFETIME) -> OnlineKeyInfo:
        """A new online key certified by `anchor` from now for `lifetime` (the first one too)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_id = 1
        if (self.path / ONLINE_CERT).exists():
            key_id = self.load().info.key_id + 1
        key = Ed25519PrivateKey.generate()
        now = self.clock()
        online = tpb.OnlineKey(
            key_id=key_id,
            algorithm=ALGORITHM,
            public_key=_raw_public(key),
            start_time=timestamp(now - dt.timedelta(minutes=5)),  # clock skew between server and signer
            end_time=timestamp(now + lifetime),
        )
        certificate = anchor.certify(online)
        _write(self.path / ONLINE_PEM, _pem(key))
        _write(self.path / ONLINE_CERT, certificate.SerializeToString(deterministic=True), 0o644)
        return self.load().info

    def exists(self) -> bool:
        return (self.path / ONLINE_CERT).exists()

    def load(self) -> OnlineSigner:
        private = _load_private(self.path / ONLINE_PEM)
        try:
            certificate = tpb.SignedOnlineKey.FromString((self.path / ONLINE_CERT).read_bytes())
            online = tpb.OnlineKey.FromString(certificate.online_key)
        except FileNotFoundError:
            raise KeyStoreError(f"no {ONLINE_CERT} in {self.path}: run `vimark keys online-rotate`") from None
        except Exception as exc:  # DecodeError, OSError
            raise KeyStoreError(f"{self.path / ONLINE_CERT} is damaged: {exc}") from None
        if online.public_key != _raw_public(private):
            raise KeyStoreError(f"{ONLINE_CERT} in {self.path} certifies another key than {ONLINE_PEM}")
        info = OnlineKeyInfo(online.key_id, online.public_key, instant(online.start_time), instant(online.end_time))
        return OnlineSigner(private, certificate, info)
