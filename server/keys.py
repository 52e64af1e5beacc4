"""The key directory: issuing (Ed25519) keys with ids and lives, and the seal keys.

    DIR/keys.json          trust metadata: every key ever made, with status and validity
    DIR/signing-<id>.pem   Ed25519 private key, PKCS#8 PEM, mode 0600
    DIR/seal-<id>.key      32-byte ChaCha20-Poly1305 key, base64, mode 0600

Rotation retires the active key (its marks keep verifying) and makes a new one active;
revocation makes every mark a key signed fail verification. Only this module and the issuer
touch private keys.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vimark.client.domain import Clock, system_clock
from vimark.client.errors import FailedPrecondition, KeyStoreError
from vimark.client.trust import ACTIVE, RETIRED, REVOKED, TrustedKey, TrustList

MANIFEST = "keys.json"


@dataclass(frozen=True)
class KeyRing:
    """What a server holds: the trust list, the active signing key, the seal keys."""

    trusted: dict[int, TrustedKey]
    active_key_id: int  # 0: none active
    signing_key: Ed25519PrivateKey | None
    seal_keys: dict[int, bytes]
    active_seal_key_id: int

    def active_signing_key(self) -> tuple[int, Ed25519PrivateKey]:
        if self.signing_key is None:
            raise FailedPrecondition("no active issuing key: run `vimark keys rotate`", reason="NO_ACTIVE_KEY")
        return self.active_key_id, self.signing_key

    def trust_list(self) -> TrustList:
        return TrustList(self.trusted, self.seal_keys)


class KeyDirectory:
    def __init__(self, path: Path | str, clock: Clock = system_clock) -> None:
        self.path = Path(path)
        self.clock = clock

    # -- reading ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / MANIFEST).exists()

    def manifest_version(self) -> tuple[int, int, int]:
        """Changes whenever the manifest is replaced (rotation and revocation write a new file)."""
        st = (self.path / MANIFEST).stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def trusted(self) -> dict[int, TrustedKey]:
        return {t.key_id: t for t in self._manifest()[0]}

    def load(self) -> KeyRing:
        """The key ring; with no active key (the last one was revoked) it still verifies, but
        issuance is refused until `vimark keys rotate`."""
        keys, seal_ids = self._manifest()
        active = [k.key_id for k in keys if k.status == ACTIVE]
        try:
            signing_key = self._signing_key(active[-1]) if active else None
            seal_keys = {
                i: base64.b64decode((self.path / f"seal-{i}.key").read_text(), validate=True) for i in seal_ids
            }
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"key directory {self.path} is damaged: {exc}") from None
        if any(len(k) != 32 for k in seal_keys.values()):
            raise KeyStoreError(f"key directory {self.path}: a seal key is not 32 bytes")
        return KeyRing({k.key_id: k for k in keys}, active[-1] if active else 0, signing_key, seal_keys, max(seal_ids))

    def _signing_key(self, key_id: int) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key((self.path / f"signing-{key_id}.pem").read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError(f"signing-{key_id}.pem is not an Ed25519 key")
        return key

    def _manifest(self) -> tuple[list[TrustedKey], list[int]]:
        try:
            data = json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            raise KeyStoreError(f"no key directory at {self.path}: run `vimark keys init {self.path}`") from None
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"{self.path / MANIFEST} is unreadable: {exc}") from None
        try:
            keys = [TrustedKey.from_json(k) for k in data["keys"]]
            seal_ids = [int(i) for i in data["seal_key_ids"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStoreError(f"{self.path / MANIFEST} is damaged: {exc!r}") from None
        if not keys or not seal_ids:
            raise KeyStoreError(f"{self.path / MANIFEST} names no issuing key or no seal key")
        return keys, seal_ids

    # -- changing ----------------------------------------------------------------------------
    def init(self) -> TrustedKey:
        if self.exists():
            raise KeyStoreError(f"{self.path} already holds keys; use `vimark keys rotate`")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = self._new_signing_key(1)
        self._write_secret(f"seal-{1}.key", base64.b64encode(secrets.token_bytes(32)))
        self._save([key], [1])
        return key

    def rotate(self, *, seal: bool = False) -> TrustedKey:
        keys, seal_ids = self._manifest()
        now = self.clock()
        keys = [replace(k, status=RETIRED, valid_until=now) if k.status == ACTIVE else k for k in keys]
        key = self._new_signing_key(max(k.key_id for k in keys) + 1)
        if seal:
            seal_ids.append(max(seal_ids) + 1)
            self._write_secret(f"seal-{seal_ids[-1]}.key", base64.b64encode(secrets.token_bytes(32)))
        self._save([*keys, key], seal_ids)
        return key

    def revoke(self, key_id: int) -> TrustedKey:
        keys, seal_ids = self._manifest()
        if key_id not in {k.key_id for k in keys}:
            raise KeyStoreError(f"no key {key_id} in {self.path}")
        now = self.clock()
        keys = [replace(k, status=REVOKED, valid_until=k.valid_until or now) if k.key_id == key_id else k for k in keys]
        self._save(keys, seal_ids)
        return next(k for k in keys if k.key_id == key_id)

    def _new_signing_key(self, key_id: int) -> TrustedKey:
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._write_secret(f"signing-{key_id}.pem", pem)
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return TrustedKey(key_id, raw, self.clock(), None, ACTIVE)

    def _write_secret(self, name: str, data: bytes) -> None:
        path = self.path / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyStoreError(
                f"{path} exists but {MANIFEST} does not name it: a rotation was interrupted; "
                f"move the file aside and run the command again"
            ) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def _save(self, keys: list[TrustedKey], seal_ids: list[int]) -> None:
        # Write-then-rename: a server polling the manifest never reads half a file.
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"keys": [k.as_json() for k in keys], "seal_key_ids": seal_ids}, indent=2))
        tmp.replace(self.path / MANIFEST)
