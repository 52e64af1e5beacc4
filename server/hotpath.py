"""The compiled Verify path (server/_hotpath.c): one call per mark that answers when a mark is
plainly VALID and otherwise hands it to the Python path, which remains the specification. The
same module probes the validity index by plate or VIN for lookups (server/_hotpath_index.c,
used by ValidityIndex).

`pip install .` compiles the extension with the machine's C compiler; without one it installs
without it and everything runs in Python (setup.py). Set VIMARK_PURE_PYTHON=1 to run without it
on a machine that has it: the test command runs both ways in CI (.ci/run).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from vimark.client import certificate as cert
from vimark.client.domain import BLOCKS_ROAD_MASK, PLATE_TYPES, month_of
from vimark.client.trust import RETIREMENT_SKEW, REVOKED, TrustList
from vimark.v1 import mark_service_pb2 as pb

DISABLE_VARIABLE = "VIMARK_PURE_PYTHON"
EPOCH_DAY = dt.date(1970, 1, 1)
VERDICT_VALID = pb.Verdict.VERDICT_VALID


def _load() -> Any:
    if os.environ.get(DISABLE_VARIABLE, "") not in ("", "0"):
        return None
    try:
        from vimark.server import _hotpath  # type: ignore[attr-defined]
    except ImportError:  # installed without a compiler
        return None
    import nacl.bindings  # noqa: F401  (libsodium initialised: sodium_init)
    from nacl._sodium import ffi, lib  # type: ignore[import-not-found]

    from vimark.server.index import ROW

    # The extension reads a row at fixed offsets; a changed layout turns it off rather than misreads.
    fields: Mapping[str, Any] = ROW.fields or {}
    layout = {name: field[1] for name, field in fields.items()}
    expected = {"serial": 0, "plate_hash": 8, "vin_hash": 16, "valid_until": 26, "status": 28, "flags": 33}
    if ROW.itemsize != 34 or any(layout.get(k) != v for k, v in expected.items()):
        return None

    def address(name: str) -> int:
        return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))

    types = sum(1 << n for n in range(128) if f"{n:02d}" in PLATE_TYPES)
    _hotpath.configure(
        address("crypto_sign_open"),
        address("crypto_aead_chacha20poly1305_ietf_decrypt"),
        types & (2**64 - 1),
        types >> 64,
        sum(1 << r for r in cert.REASONS),
        sum(1 << p for p in cert.PRESENTATIONS),
        (cert.FIRST_MONTH, cert.LAST_MONTH, cert.LAST_DAY, cert.FIRST_INSTANT, cert.LAST_INSTANT),
        BLOCKS_ROAD_MASK,
        cert.Presentation.PRESENTATION_ONLINE,
    )
    return _hotpath


native: Any = _load()  # the extension, or None: the Python path alone
# Ed25519 of many (public key, signature, message) at once, the GIL released for them all: the
# signature engine's workers use it when built (server/batcher.py).
check_signatures: Callable[[Sequence[tuple[bytes, bytes, bytes]]], list[bool]] | None = (
    native.check_signatures if native is not None else None
)
FORGED_SIGNATURE: str = native.FORGED_SIGNATURE if native is not None else "FORGED_SIGNATURE"  # step 8 failed
AUTHENTIC: str = native.AUTHENTIC if native is not None else "AUTHENTIC"  # steps 1-8 passed; not plainly VALID


def described() -> str:
    """Which Verify path this process runs, for its start-up log line."""
    if native is not None:
        return "compiled path (server/_hotpath.c)"
    if os.environ.get(DISABLE_VARIABLE, "") not in ("", "0"):
        return f"Python path ({DISABLE_VARIABLE} is set)"
    return "Python path (the compiled module is not built: no C compiler at install)"


class ValidMark(NamedTuple):
    """A mark the compiled path found plainly VALID: its fields and its vehicle's standing."""

    serial: int
    plate_number: str
    plate_type: int
    vin: str
    valid_until: int  # Month
    presentation: int
    issued_at: int
    reason: int
    key_id: int
    status_bits: int  # the vehicle's
    current_valid_until: int  # the vehicle's recorded validity (Month), covering the judged day
    signed: tuple[bytes, bytes, bytes] | None  # (public key, signature, message) still to check, or None

    @property
    def verdict(self) -> int:
        return VERDICT_VALID


class _Keys(NamedTuple):
    trust: TrustList
    seal_keys: dict[int, bytes]
    keys: dict[int, tuple[bytes, bool, float | None]]


def _keys_of(trust: TrustList) -> _Keys:
    """The trust list as the extension reads it: key id -> (public key, revoked, last instant it signs)."""
    keys = {
        key_id: (  # by the mapping's key, as TrustList.claim looks it up
            k.public_key,
            k.status == REVOKED,
            None if k.valid_until is None else (k.valid_until + RETIREMENT_SKEW).timestamp(),
        )
        for key_id, k in trust.keys.items()
    }
    return _Keys(trust, dict(trust.seal_keys), keys)


class HotPath:
    """The compiled path over one index; `check` answers a ValidMark, FORGED_SIGNATURE, AUTHENTIC or None."""

    def __init__(self, index: object) -> None:
        self.index = index
        self._keys: _Keys | None = None
        self._days: tuple[dt.date, int, int] | None = None

    def check(
        self, text: str, trust: TrustList, now: dt.datetime, on: dt.date, check_signature: bool = True
    ) -> ValidMark | str | None:
        keys = self._keys
        if keys is None or keys.trust is not trust:  # the trust list is replaced, never changed
            keys = self._keys = _keys_of(trust)
        days = self._days
        if days is None or days[0] != on:
            days = self._days = (on, (on - EPOCH_DAY).days, month_of(on))
        found = native.verify(
            text, keys.seal_keys, keys.keys, self.index, now.timestamp(), days[1], days[2], check_signature
        )
        if found is None or found is FORGED_SIGNATURE or found is AUTHENTIC:
            return found  # type: ignore[no-any-return]
        return ValidMark._make(found)


def hot_path_for(index: object) -> HotPath | None:
    """The compiled path over `index` when it is built and `index` is a ValidityIndex (whose
    arrays it reads), else None."""
    from vimark.server.index import ValidityIndex

    return HotPath(index) if native is not None and isinstance(index, ValidityIndex) else None
