"""verify_batch's baseline: the fastest raw Ed25519 verify (libsodium through PyNaCl, or OpenSSL
through cryptography), probed on one core, then looped over the dataset's real (key, message,
signature) triples in one process per core."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import time
from pathlib import Path
from typing import Any

from load import dataset as datasets
from load.bench.run import Run

Triple = tuple[bytes, bytes, bytes]  # (raw public key, signed message, signature)


def _items(data: datasets.Dataset, limit: int = 20_000) -> list[Triple]:
    from cryptography.hazmat.primitives import serialization

    from vimark.client import certificate as cert
    from vimark.server.keys import KeyDirectory

    ring = KeyDirectory(data.keys).load()
    items = []
    for text, verdict in data.marks[:limit]:
        if verdict == "FORGED":
            continue
        c = cert.decode(text, ring.seal_keys)
        public = ring.trusted[c.key_id].public_key
        raw = (
            public
            if isinstance(public, bytes)
            else public.public_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )
        items.append((raw, c.signed_message, c.signature))
    return items


def _loop(impl: str, items: list[Triple], seconds: float) -> int:
    """Verify items in turn for `seconds`; returns how many verified."""
    n = 0
    end = time.perf_counter() + seconds
    if impl == "pynacl":
        from nacl.bindings import crypto_sign_open

        prepared = [(pk, sig + msg) for pk, msg, sig in items]
        while time.perf_counter() < end:
            for pk, signed in prepared[:256] if n == 0 else prepared:
                crypto_sign_open(signed, pk)
                n += 1
                if n % 256 == 0 and time.perf_counter() >= end:
                    return n
    else:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        keys = {pk: Ed25519PublicKey.from_public_bytes(pk) for pk, _, _ in items}
        prepared2 = [(keys[pk], msg, sig) for pk, msg, sig in items]
        while time.perf_counter() < end:
            for key, msg, sig in prepared2:
                key.verify(sig, msg)
                n += 1
                if n % 256 == 0 and time.perf_counter() >= end:
                    return n
    return n


def _child(impl: str, path: str, seconds: float, barrier: Any, out: Any) -> None:
    items = pickle.loads(Path(path).read_bytes())
    _loop(impl, items, 0.2)  # warm
    barrier.wait()
    out.put(_loop(impl, items, seconds))


def ed25519_baseline(run: Run) -> tuple[str, float, dict[str, int]]:
    """The faster of libsodium (PyNaCl) and OpenSSL (cryptography), then that loop on every core.
    Returns (the implementation, verifications/s on all cores, each one's rate on one core)."""
    items = _items(run.data)
    probe = 0.3 if run.quick else 1.5
    single = {impl: int(_loop(impl, items, probe) / probe) for impl in ("pynacl", "cryptography")}
    impl = max(single, key=lambda k: single[k])
    path = run.work / "ed25519.pickle"
    path.write_bytes(pickle.dumps(items[::-1]))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(run.processes), ctx.Queue()
    seconds = run.duration
    procs = [ctx.Process(target=_child, args=(impl, str(path), seconds, barrier, out)) for _ in range(run.processes)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return impl, total / seconds, single
