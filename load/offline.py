"""Police terminals offline: the signed status snapshot and delta for a synthetic province.

    python -m load.offline                      # 40 M vehicles, 60 M serials within validity
    python -m load.offline --vehicles 1000000   # a quick run (serials scale with it: 1.5 per vehicle)

The province (issue 11): N vehicles, 1.5 N serials within validity of which one third superseded
(each superseded serial is a vehicle's earlier mark, at a random place in issue order), 0.5 % of
vehicles blocked (C, D, E, M, P), 0.2 % with a police alert (J, L, N), 1,000 revoked serials.
The build starts from arrays as the store would give them (each mark's vehicle, each vehicle's
current serial) and does what server/terminal_status.py does after its read: the judging join,
the bits, the hotlist, the digest, the encoding and the online key's signature. Then 100,000
changes (90,000 new grants, each superseding its vehicle's mark; 9,000 status changes; 1,000
revocations) and the signed delta. Then the offline verification of real signed marks on one
core (signature included), each checked against the truth of the arrays.

Prints sizes, times, the information-theoretic floor of the serial classes; the last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vimark.client.certificate import CertificateBody, Presentation, encode, signed_message
from vimark.client.domain import china_date, month_of, status_bits
from vimark.client.offline import OfflineVerifier, StatusState, TrustBundle
from vimark.client.offline.codec import plate_key
from vimark.client.offline.directory import open_snapshot
from vimark.client.offline.envelope import STATUS_DELTA, STATUS_SNAPSHOT, signed_bytes
from vimark.client.trust import ACTIVE, TrustedKey, TrustList
from vimark.server.store import Store, schema
from vimark.server.terminal_status import HOTLIST_MASK, build_state, signed_plate_reader
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import terminal_service_pb2 as tpb

MADE = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
PROVINCE = "闽"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, O
CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 34
BLOCKING = [status_bits(s) for s in ("C", "D", "E", "M", "P", "CG")]
ALERTS = [status_bits(s) for s in ("J", "L", "N", "JG")]


def plate(v: int) -> str:
    """A unique ordinary plate for vehicle v (scrambled, so hotlist plates are spread as real ones)."""
    x = (v * 2654435761 + 12345) % (len(LETTERS) * 34**5)
    tail = "".join(CHARS[x // 34**i % 34] for i in range(5))
    return f"{PROVINCE}{LETTERS[x // 34**5]}{tail}"


@dataclass
class Province:
    mark_vehicle: npt.NDArray[np.int32]  # position p (serial p + 1) -> its vehicle
    vehicle_current: npt.NDArray[np.int64]  # vehicle -> its current serial
    status: dict[int, int]  # vehicle -> status bits, blocked or flagged only
    revoked: set[int]


def make_province(vehicles: int, rng: np.random.Generator) -> Province:
    serials = vehicles * 3 // 2
    twice = serials - vehicles  # vehicles with an earlier, superseded mark
    order = rng.permutation(serials).astype(np.int64)
    a, b = order[0 : 2 * twice : 2], order[1 : 2 * twice : 2]
    current_pos = np.concatenate([np.maximum(a, b), order[2 * twice :]])
    mark_vehicle = np.empty(serials, np.int32)
    ids = np.arange(vehicles, dtype=np.int32)
    mark_vehicle[current_pos] = ids
    mark_vehicle[np.minimum(a, b)] = ids[:twice]
    chosen = rng.choice(vehicles, vehicles * 7 // 1000, replace=False)
    blocked, flagged = chosen[: vehicles * 5 // 1000], chosen[vehicles * 5 // 1000 :]
    status = {int(v): BLOCKING[i % len(BLOCKING)] for i, v in enumerate(blocked)}
    status.update({int(v): ALERTS[i % len(ALERTS)] for i, v in enumerate(flagged)})
    revoked = {int(s) for s in rng.choice(serials, 1000, replace=False) + 1}
    return Province(mark_vehicle, current_pos + 1, status, revoked)


def build(p: Province, change_id: int) -> StatusState:
    """The judging join and the state, as server/terminal_status.py makes it from the store's rows."""
    serials = np.arange(1, len(p.mark_vehicle) + 1, dtype=np.int64)
    current = p.vehicle_current[p.mark_vehicle] == serials
    revoked = np.fromiter(p.revoked, np.int64)
    current[revoked - 1] = False
    hotlist = {plate_key("02", plate(v)): bits for v, bits in p.status.items()}
    return StatusState.build(
        change_id=change_id,
        made_at=MADE,
        max_age=dt.timedelta(hours=24),
        first_serial=1,
        current=current,
        revoked=frozenset(p.revoked),
        unknown_vehicle=frozenset(),
        hotlist=hotlist,
    )


class Signer:
    """The online key (an anchor-certified one, as server/terminal_keys.py holds)."""

    def __init__(self) -> None:
        self.anchor = Ed25519PrivateKey.generate()
        self.key = Ed25519PrivateKey.generate()
        online = tpb.OnlineKey(key_id=1, algorithm="Ed25519", public_key=_raw(self.key))
        online.start_time.FromDatetime(MADE - dt.timedelta(days=1))
        online.end_time.FromDatetime(MADE + dt.timedelta(days=90))
        data = online.SerializeToString()
        self.certificate = tpb.SignedOnlineKey(
            online_key=data, anchor_signature=self.anchor.sign(signed_bytes("online-key", data))
        )

    def sign(self, kind: str, payload: bytes) -> bytes:
        return tpb.SignedEnvelope(
            payload=payload, signature=self.key.sign(signed_bytes(kind, payload)), signer=self.certificate
        ).SerializeToString()


def _raw(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def change(p: Province, rng: np.random.Generator, n: int) -> Province:
    """n changes: 90 % grants (a new serial supersedes the vehicle's), 9 % status, 1 % revocations."""
    grants, statuses = n * 90 // 100, n * 9 // 100
    revocations = n - grants - statuses
    vehicles = len(p.vehicle_current)
    top = len(p.mark_vehicle)
    granted = rng.choice(vehicles, grants, replace=False).astype(np.int32)
    vehicle_current = p.vehicle_current.copy()
    vehicle_current[granted] = np.arange(top + 1, top + grants + 1)
    mark_vehicle = np.concatenate([p.mark_vehicle, granted])
    status = dict(p.status)
    listed = list(status)
    for i, v in enumerate(rng.choice(vehicles, statuses, replace=False)):
        if i % 2 and listed:
            status.pop(listed[i % len(listed)], None)  # cleared
        else:
            status[int(v)] = BLOCKING[0] if i % 4 == 0 else ALERTS[0]
    revoked = p.revoked | {int(s) for s in rng.choice(top + grants, revocations, replace=False) + 1}
    return Province(mark_vehicle, vehicle_current, status, revoked)


def cascade_bits(n_in: int, n_out: int) -> float:
    """Size of a CRLite Bloom-filter cascade for n_in 'current' among n_in + n_out (its paper's
    first level at false-positive rate sqrt(p)/2 with p = n_in/n_out, then 1/2), for comparison."""
    small, large = min(n_in, n_out), max(n_in, n_out)
    rate, total, level = math.sqrt(small / large) / 2, 0.0, 0
    count, other = float(small), float(large)
    while count >= 1:
        r = rate if level == 0 else 0.5
        total += count * math.log2(1 / r) * 1.44
        count, other = other * r, count
        level += 1
    return total


def fill_store(store: Store, p: Province) -> None:
    """The province's vehicles and marks as rows (what issuance writes; the QR text is not read
    when the signed plate is stored, so a placeholder stands for it)."""
    raw = store.engine.raw_connection()
    try:
        c = raw.cursor()
        if store.is_sqlite:  # the driver connection is in autocommit mode: one transaction for the lot
            c.execute("BEGIN")
        sql = (lambda q: q) if store.is_sqlite else (lambda q: q.replace("?", "%s"))
        vehicles = [
            (v + 1, "02", plate(v), f"LSVAB2BJ5K{v:07d}", "small_passenger", "2025-01-01", 5, False,
             p.status.get(v, 0), 202706, int(p.vehicle_current[v]))
            for v in range(len(p.vehicle_current))
        ]  # fmt: skip
        c.executemany(sql("INSERT INTO vehicles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), vehicles)
        del vehicles
        columns = ", ".join(schema.SIGNED_MARK_COLUMNS)
        insert = sql(f"INSERT INTO marks ({columns}) VALUES ({', '.join('?' * len(schema.SIGNED_MARK_COLUMNS))})")
        for start in range(0, len(p.mark_vehicle), 200_000):
            rows = [
                (pos + 1, f"r{pos + 1}", v + 1, 202706, 1, 0, "2026-06-01", None, "", 1, "-", pos + 1 in p.revoked,
                 "", "", "", "02", plate(v), f"LSVAB2BJ5K{v:07d}")
                for pos, v in enumerate(p.mark_vehicle[start : start + 200_000].tolist(), start)
            ]  # fmt: skip
            c.executemany(insert, rows)
        raw.commit()
        if not store.is_sqlite:  # statistics, as a database in service has them
            c.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()


def store_build(args: argparse.Namespace) -> None:
    """--store: the real path, server/terminal_status.py's build from a store holding the province."""
    rng = np.random.default_rng(args.seed)
    province = make_province(args.vehicles, rng)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store if args.store != "sqlite" else f"sqlite:///{tmp}/offline.db"
        store = Store(url)
        t = time.perf_counter()
        fill_store(store, province)
        print(f"store: {args.vehicles:,} vehicles, {len(province.mark_vehicle):,} marks written in "
              f"{time.perf_counter() - t:.1f} s ({url.split(':')[0]})")  # fmt: skip
        signer = Signer()
        times = []
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        for _ in range(args.repeat):
            t = time.perf_counter()
            facts = store.status_facts(month_of(china_date(MADE)), HOTLIST_MASK, signed_plate_reader({}))
            read_s = time.perf_counter() - t
            state = build_state(facts, MADE, dt.timedelta(hours=24))
            signer.sign(STATUS_SNAPSHOT, state.to_message().SerializeToString(deterministic=True))
            times.append((read_s, time.perf_counter() - t))
            del facts
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        store.close()
    assert state.digest() == build(province, 0).digest() or _same_bits(state, build(province, 0))
    read_s, total_s = (statistics.median(x) for x in zip(*times, strict=True))
    per_mark = total_s / len(province.mark_vehicle)
    print(
        f"build from the store: {total_s:.2f} s median of {args.repeat} (store read {read_s:.2f} s), "
        f"{per_mark * 1e6:.2f} us per mark, peak RSS {peak / 1e6:.0f} MB ({rss_before / 1e6:.0f} MB before); "
        f"60 M marks at this rate: {per_mark * 60e6 / 60:.1f} min"
    )
    print(json.dumps({"vehicles": args.vehicles, "marks": len(province.mark_vehicle), "store": url.split(":")[0],
                      "build_seconds": round(total_s, 2), "read_seconds": round(read_s, 2),
                      "us_per_mark": round(per_mark * 1e6, 3), "peak_rss_bytes": peak, "rss_before_bytes": rss_before,
                      "extrapolated_60m_seconds": round(per_mark * 60e6)}))  # fmt: skip


def _same_bits(a: StatusState, b: StatusState) -> bool:
    """The store's build judged every serial as the arrays say (times and change ids aside)."""
    return (a.current_bits, a.revoked, a.hotlist, a.missing) == (b.current_bits, b.revoked, b.hotlist, b.missing)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m load.offline")
    parser.add_argument("--vehicles", type=int, default=40_000_000)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--marks", type=int, default=2000, help="signed marks verified offline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--store", metavar="URL", help="time the build from a real store instead: 'sqlite' (a temporary file) or a URL"
    )
    parser.add_argument("--repeat", type=int, default=3, help="--store: builds timed")
    args = parser.parse_args()
    if args.store:
        store_build(args)
        return
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    province = make_province(args.vehicles, rng)
    print(
        f"province: {args.vehicles:,} vehicles, {len(province.mark_vehicle):,} serials "
        f"({time.perf_counter() - t:.1f} s)"
    )

    signer = Signer()
    t = time.perf_counter()
    state = build(province, change_id=1)
    snapshot = signer.sign(STATUS_SNAPSHOT, state.to_message().SerializeToString(deterministic=True))
    build_s = time.perf_counter() - t
    m = state.to_message()
    parts = {
        "current_bits": len(m.current_bits),
        "hotlist": len(m.hotlist),
        "revoked": len(m.revoked_serials),
        "total_signed": len(snapshot),
    }
    n_current = int(np.unpackbits(np.frombuffer(state.current_bits, np.uint8)).sum())
    n = state.serial_count
    q = n_current / n
    floor_bytes = n * -(q * math.log2(q) + (1 - q) * math.log2(1 - q)) / 8
    raw_bits = len(state.current_bits)
    cascade = cascade_bits(n_current, n - n_current) / 8
    print(
        f"snapshot: {parts['total_signed'] / 1e6:.2f} MB signed (bits {parts['current_bits'] / 1e6:.2f} MB, "
        f"hotlist {len(state.hotlist):,} plates in {parts['hotlist'] / 1e6:.2f} MB, revoked {parts['revoked']} B); "
        f"built in {build_s:.1f} s"
    )
    print(
        f"serial classes: floor {floor_bytes / 1e6:.2f} MB (entropy of {q:.3f} current); bitmap "
        f"{raw_bits / 1e6:.2f} MB raw, {parts['current_bits'] / 1e6:.2f} MB as xz "
        f"({parts['current_bits'] / floor_bytes:.3f}x "
        "the floor: older serials are superseded more often); "
        f"a CRLite cascade would need about {cascade / 1e6:.2f} MB"
    )

    t = time.perf_counter()
    changed = change(province, rng, args.changes)
    new_state = build(changed, change_id=1 + args.changes)
    delta_payload = state.delta_to(new_state).SerializeToString(deterministic=True)
    delta = signer.sign(STATUS_DELTA, delta_payload)
    delta_s = time.perf_counter() - t
    applied = state.apply(tpb.StatusDelta.FromString(delta_payload))
    assert applied.digest() == new_state.digest()
    print(f"delta after {args.changes:,} changes: {len(delta) / 1e3:.1f} kB signed ({delta_s:.1f} s, applies exactly)")

    # Offline verification of real signed marks, on this (one) thread.
    issuing = Ed25519PrivateKey.generate()
    trust = TrustList({1: TrustedKey(1, _raw(issuing), MADE - dt.timedelta(days=900), None, ACTIVE)}, {1: bytes(32)})
    bundle = TrustBundle(trust, MADE, dt.timedelta(hours=72))
    t = time.perf_counter()
    held = open_snapshot(snapshot, (_raw(signer.anchor),))
    load_s = time.perf_counter() - t
    verifier = OfflineVerifier(bundle, held, clock=lambda: MADE + dt.timedelta(hours=1))
    picks = rng.choice(len(province.mark_vehicle), args.marks, replace=False)
    texts, expected = [], []
    for pos in picks:
        serial, v = int(pos) + 1, int(province.mark_vehicle[pos])
        body = CertificateBody(
            serial,
            plate(v),
            "02",
            f"LSVAB2BJ5K{v:07d}",
            month_of(dt.date(2027, 6, 1)),
            int(MADE.timestamp()) - 86400,
            1,
            Presentation.PRESENTATION_OFFLINE,
        )
        signature = issuing.sign(signed_message(1, body.to_bytes()))
        texts.append(encode(body.to_bytes(), 1, signature, (1, bytes(32))))
        bits = province.status.get(v, 0)
        if bits in BLOCKING:
            expected.append(pb.VERDICT_VEHICLE_BLOCKED)
        elif serial in province.revoked:
            expected.append(pb.VERDICT_REVOKED)
        elif province.vehicle_current[v] != serial:
            expected.append(pb.VERDICT_SUPERSEDED)
        else:
            expected.append(pb.VERDICT_VALID)
    times = []
    for text, want in zip(texts, expected, strict=True):
        start = time.perf_counter()
        verdict = verifier.verify(text).verdict
        times.append(time.perf_counter() - start)
        assert verdict == want, (verdict, want)
    p50 = statistics.median(times) * 1e3
    print(
        f"offline verification: p50 {p50:.3f} ms per mark ({args.marks} sealed marks, signature included, "
        f"all as the arrays say); loading the signed snapshot {load_s:.1f} s"
    )
    print(
        json.dumps(
            {
                "vehicles": args.vehicles,
                "serials": n,
                "snapshot_bytes": parts["total_signed"],
                "snapshot_current_bits_bytes": parts["current_bits"],
                "snapshot_hotlist_bytes": parts["hotlist"],
                "hotlist_plates": len(state.hotlist),
                "serial_floor_bytes": round(floor_bytes),
                "bitmap_over_floor": round(parts["current_bits"] / floor_bytes, 3),
                "bitmap_raw_bytes": raw_bits,
                "cascade_estimate_bytes": round(cascade),
                "build_seconds": round(build_s, 2),
                "changes": args.changes,
                "delta_bytes": len(delta),
                "delta_build_seconds": round(delta_s, 2),
                "snapshot_load_seconds": round(load_s, 2),
                "verify_p50_ms": round(p50, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
