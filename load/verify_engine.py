"""In-process figures for the verify path and the signature engine (server/batcher.py).

    python -m load.verify_engine [--seconds 2.0]

Prints, on this machine:
  (a) the raw Ed25519 verify loop (libsodium) on 1 thread and on every core: the ceiling;
  (b) Verifier.verify_many of 256 distinct certificates (the VerifyBatch path), certificates/s,
      through the engine and inline, as a fraction of (a) on every core;
  (c) unary Verifier.verify from 8 and 16 concurrent threads (one per "gRPC call"), with the check
      inline on the calling thread vs. coalesced through the engine's workers;
  (d) the per-call Python cost of Verifier.verify without the signature, and its parts.
No gRPC: the framework's own per-call cost (about 170-200 us) comes on top of (c) and (d).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vimark.client import certificate as cert
from vimark.client.domain import china_date
from vimark.client.trust import TrustList, verify_signature
from vimark.server import rules
from vimark.server.batcher import SignatureEngine
from vimark.server.demo import demo_vehicles
from vimark.server.index import ValidityIndex
from vimark.server.issuer import Signer
from vimark.server.keys import KeyDirectory
from vimark.server.records import VehicleRecord
from vimark.server.verifier import VehicleStanding, Verifier
from vimark.v1 import mark_service_pb2 as pb

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


class _Trust:
    def __init__(self, trust: TrustList) -> None:
        self._trust = trust

    def current(self) -> TrustList:
        return self._trust


def build(n: int) -> tuple[ValidityIndex, _Trust, list[str]]:
    """n vehicles in an index, each with its current, sealed, valid mark."""
    path = Path(tempfile.mkdtemp()) / "keys"
    KeyDirectory(path).init()
    ring = KeyDirectory(path).load()
    signer = Signer(ring)
    records, texts = [], []
    today = china_date(NOW)
    current = [v for v in demo_vehicles(n * 2, today) if rules.within_validity(v.valid_until, today)][:n]
    for i, v in enumerate(current, 1):
        record = VehicleRecord(**{**v.__dict__, "vehicle_id": i, "current_serial": i, "status_bits": 0})
        records.append(record)
        body = cert.CertificateBody(
            serial=i,
            plate_number=record.plate_number,
            plate_type=record.plate_type,
            vin=record.vin,
            valid_until=record.valid_until or 0,
            issued_at=int(NOW.timestamp()) - 86400,
            reason=cert.IssueReason.ISSUE_REASON_REDOWNLOAD,
            presentation=cert.Presentation.PRESENTATION_OFFLINE,
        )
        texts.append(signer.sign(body)[0])
    index = ValidityIndex()
    index.load(n, records, [])
    return index, _Trust(ring.trust_list()), texts


def _per_second(run: Callable[[], int], seconds: float, repeats: int = 3) -> float:
    """Best of `repeats`: units done per second by run() called in a loop for about `seconds`."""
    best = 0.0
    for _ in range(repeats):
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            done += run()
        best = max(best, done / (time.perf_counter() - t0))
    return best


def _threads_rate(threads: int, body: Callable[[int], int], seconds: float) -> tuple[float, list[float]]:
    """Units/s over `threads` threads, each looping body(slot) for `seconds`; also per-unit latencies."""
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def loop(slot: int) -> None:
        barrier.wait()
        end = time.perf_counter() + seconds
        n, lat = 0, latencies[slot]
        while (t := time.perf_counter()) < end:
            n += body(slot)
            lat.append(time.perf_counter() - t)
        counts[slot] = n

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0), sorted(x for lat in latencies for x in lat)


def _pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))] * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    seconds = args.seconds
    cores = len(os.sched_getaffinity(0))
    index, trust, texts = build(256)
    clock = lambda: NOW  # noqa: E731
    item = trust.current().claim(texts[0]).signed
    check_verdicts = Verifier(index, trust, clock).verify_many(texts)
    assert all(v.verdict == pb.VERDICT_VALID for v in check_verdicts), "the fixture's marks must all be valid"

    print(f"{cores} cores; {len(texts)} distinct sealed certificates; best of 3 x {seconds:.1f} s\n")
    # (a) The ceiling.
    raw1, _ = _threads_rate(1, lambda _: verify_signature(*item) and 1, seconds)
    raw_all, _ = _threads_rate(cores, lambda _: verify_signature(*item) and 1, seconds)
    print(f"(a) raw libsodium verify loop: 1 thread {raw1:,.0f}/s; {cores} threads {raw_all:,.0f}/s")

    # (b) VerifyBatch: verify_many of 256 distinct certificates, one caller, then 2 callers.
    print("(b) Verifier.verify_many(256 distinct), certificates/s (fraction of (a) on all cores):")
    inline = Verifier(index, trust, clock)
    rate = _per_second(lambda: len(inline.verify_many(texts)), seconds)
    print(f"    inline (no engine)                       {rate:8,.0f}/s  {rate / raw_all:.2f}")
    for window, max_batch in ((0.0, 64), (0.0005, 64), (0.0, 32), (0.0, 128)):
        with SignatureEngine(window=window, max_batch=max_batch) as engine:
            verifier = Verifier(index, trust, clock, signatures=engine)
            rate = _per_second(lambda v=verifier: len(v.verify_many(texts)), seconds)
            rate2, _ = _threads_rate(2, lambda _, v=verifier: len(v.verify_many(texts)), seconds)
        print(
            f"    engine window {window * 1e3:.1f} ms, max_batch {max_batch:3d}:  1 caller {rate:8,.0f}/s  "
            f"{rate / raw_all:.2f}; 2 callers {rate2:8,.0f}/s  {rate2 / raw_all:.2f}"
        )

    # (c) Unary Verify from many threads (each one gRPC handler thread).
    print("(c) unary Verifier.verify from N threads, verifications/s, latency p50/p99 us:")
    for threads in (8, 16):
        setups: list[tuple[str, SignatureEngine | None]] = [
            ("inline on the calling thread", None),
            ("coalesced, window 0", SignatureEngine(window=0.0, coalesce_unary=True)),
            ("coalesced, window 0.5 ms", SignatureEngine(window=0.0005, coalesce_unary=True)),
        ]
        for label, engine in setups:
            if engine is not None:
                engine.start()
            verifier = Verifier(index, trust, clock, signatures=engine)
            rate, lat = _threads_rate(
                threads, lambda slot, v=verifier: v.verify(texts[slot * 13 % len(texts)]) and 1, seconds
            )
            if engine is not None:
                engine.stop()
            p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
            print(f"    {threads:2d} threads, {label:30s} {rate:8,.0f}/s  p50 {p50:6.0f}  p99 {p99:6.0f}")

    # (d) The Python around the signature, per call.
    print("(d) per-call cost of Verifier.verify without the signature (1 thread), us:")

    class _AlwaysAuthentic:
        def check(self, *_: bytes) -> bool:
            return True

    no_sig = Verifier(index, trust, clock, signatures=_AlwaysAuthentic())  # type: ignore[arg-type]
    seals = trust.current().seal_keys
    c = cert.decode(texts[0], seals)
    body = c.body
    vehicle = index.by_plate(body.plate_type, body.plate_number)
    assert vehicle is not None
    on = china_date(NOW)
    parts: list[tuple[str, Callable[[], object]]] = [
        ("Verifier.verify, signature excluded", lambda: no_sig.verify(texts[0])),
        ("  decode (Base45, unseal, protobuf)", lambda: cert.decode(texts[0], seals)),
        ("    Base45 only", lambda: cert.b45decode(texts[0][4:])),
        ("  claim (decode + key lookup)", lambda: trust.current().claim(texts[0])),
        ("  index.by_plate", lambda: index.by_plate(body.plate_type, body.plate_number)),
        ("  VehicleStanding.of", lambda: VehicleStanding.of(vehicle, on, rules.DEFAULT_CONFIG)),
        ("signature alone (libsodium)", lambda: verify_signature(*item)),
    ]
    for label, fn in parts:

        def run(fn: Callable[[], object] = fn) -> int:
            for _ in range(100):
                fn()
            return 100

        print(f"    {label:40s} {1e6 / _per_second(run, seconds / 4):7.1f}")


if __name__ == "__main__":
    main()
