"""Benchmark datasets: synthetic vehicles with marks and a realistic mix of verdicts, built
in-process with the server's own components and cached under load/.data/ by their parameters.

    python -m load.dataset [N]          build (or find) the dataset of N vehicles and print its mix

The mix (for N vehicles, from `vimark serve --demo`'s generator, so categories and plates look
like the road): about 84% of the marks shown are VALID, 5% INSPECTION_EXPIRED (issued with a
clock inside the vehicle's last validity, which has since ended), 4% SUPERSEDED (a second mark
was granted after the first; the first text is kept), 5% of vehicles carry a status letter set
after their mark was issued (C and D block the road: VEHICLE_BLOCKED; G, J, K, L do not: VALID
with the status shown), 2% FORGED (a real body signed by a key that is not the trusted one, sealed under the
trusted key id and seal key). Every expected verdict is the one the server's own Verifier gives,
computed when the dataset is built.

Every mark is issued for ISSUE_REASON_TRANSFER: a grant that carries the vehicle's validity onto a
new mark (its first, or one that supersedes the current). A re-download would not do for the
second mark: it hands the current mark back and writes nothing.

Building writes with SQLite's durability off, on tmpfs where there is one: the dataset is a
fixture, and a durable build would take minutes (one fsync per mark). Benchmarks run the server
on a copy, with the store's own (durable) settings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vimark.client import certificate as cert
from vimark.client.domain import BLOCKS_ROAD_MASK, china_date, month_of, month_start, system_clock
from vimark.client.errors import VimarkError
from vimark.server import rules
from vimark.server.demo import demo_vehicles
from vimark.server.index import ValidityIndex
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.keys import KeyDirectory
from vimark.server.records import VehicleRecord
from vimark.server.store import Store
from vimark.server.sync import ReloadableKeyRing
from vimark.server.verifier import Verifier
from vimark.v1 import certificate_pb2
from vimark.v1 import mark_service_pb2 as pb

DATA_DIR = Path(__file__).resolve().parent / ".data"
FORMAT = 2  # bump when the generator changes: cached datasets of another format are rebuilt
# 2: marks are TRANSFER grants (a re-download no longer makes a new mark, so SUPERSEDED needs a grant)
FULL_VEHICLES = 100_000
QUICK_VEHICLES = 2_000
# The grant every vehicle within validity gets, its validity unchanged, on a new mark (a durable write).
_GRANT = certificate_pb2.ISSUE_REASON_TRANSFER


@dataclass(frozen=True)
class Dataset:
    """A built dataset: a SQLite file and key directory to copy, and the requests to send."""

    path: Path
    vehicles: int
    marks: list[tuple[str, str]]  # (QR text, expected verdict name), in a shuffled order
    plates: list[tuple[str, str]]  # (plate type, plate number) of every vehicle, shuffled
    issuable: list[tuple[str, str]]  # vehicles with a mark that a TRANSFER Issue succeeds for

    @property
    def db(self) -> Path:
        return self.path / "vimark.db"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    def mix(self) -> Counter[str]:
        return Counter(v for _, v in self.marks)

    def copy_to(self, directory: Path) -> tuple[Path, Path]:
        """A private copy of the database and keys for one server run (servers write: audit rows,
        issued marks). Returns (db file, key directory)."""
        directory.mkdir(parents=True, exist_ok=True)
        db, keys = directory / "vimark.db", directory / "keys"
        # A previous copy's write-ahead log would be replayed into this one (SQLite reports the
        # file malformed), and its keys would mix with these: start from nothing.
        for leftover in (db.with_name("vimark.db-wal"), db.with_name("vimark.db-shm")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(keys, ignore_errors=True)
        shutil.copyfile(self.db, db)
        shutil.copytree(self.keys, keys)
        return db, keys


def load(vehicles: int = FULL_VEHICLES, seed: int = 2026, *, verbose: bool = True) -> Dataset:
    """The cached dataset for these parameters, built first if absent. It is dated: marks are
    judged against today, so a dataset built on another day is rebuilt."""
    today = china_date(system_clock())
    key = hashlib.sha256(f"{FORMAT}:{vehicles}:{seed}:{today}".encode()).hexdigest()[:12]
    path = DATA_DIR / f"dataset-{vehicles}-{key}"
    manifest = path / "dataset.json"
    if not manifest.exists():
        started = time.perf_counter()
        if verbose:
            print(f"building dataset of {vehicles:,} vehicles in {path} (cached for later runs)...", flush=True)
        _build(path, vehicles, seed)
        if verbose:
            print(f"dataset built in {time.perf_counter() - started:.1f}s", flush=True)
    data = json.loads(manifest.read_text())
    return Dataset(
        path=path,
        vehicles=data["vehicles"],
        marks=[tuple(m) for m in data["marks"]],  # type: ignore[misc]
        plates=[tuple(p) for p in data["plates"]],  # type: ignore[misc]
        issuable=[tuple(p) for p in data["issuable"]],  # type: ignore[misc]
    )


def _fast_build_dir() -> Path:
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="vimark-dataset-", dir=shm if shm.is_dir() else None))


def _build(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    work = _fast_build_dir()
    try:
        db = work / "vimark.db"
        keys_dir = work / "keys"
        KeyDirectory(keys_dir).init()
        # A fixture, not a record anyone relies on: durability off while building (see the module doc).
        sqlite3.connect(db).execute("PRAGMA journal_mode=WAL").close()
        store = Store(f"sqlite:///{db}")
        from sqlalchemy import event

        event.listen(store.engine, "connect", lambda c, _r: c.execute("PRAGMA synchronous=OFF"))
        store.engine.dispose()
        watcher = ReloadableKeyRing(KeyDirectory(keys_dir))
        now = system_clock()
        today = china_date(now)
        vehicles = demo_vehicles(n, today, seed)
        # Status letters are set after the mark is issued (a stolen car keeps the mark it had).
        statuses = {i: v.status_bits for i, v in enumerate(vehicles) if v.status_bits}
        vehicles = [VehicleRecord(**{**v.__dict__, "status_bits": 0}) for v in vehicles]
        for start in range(0, n, 1000):
            store.upsert_vehicles(vehicles[start : start + 1000])

        current = month_of(today)
        issuer_now = Issuer(store, watcher.signer, system_clock)
        kinds: dict[int, str] = {}
        for i, v in enumerate(vehicles):
            assert v.valid_until is not None
            if v.valid_until < current:
                kinds[i] = "expired"
            elif i in statuses:
                kinds[i] = "status"
            else:
                roll = rng.random()
                kinds[i] = "superseded" if roll < 0.04 else "forged" if roll < 0.06 else "valid"

        def issue(i: int) -> tuple[int, str | None]:
            v = vehicles[i]
            issuer = issuer_now
            if kinds[i] == "expired":  # issued while the last validity ran: it has ended since
                assert v.valid_until is not None
                then = dt.datetime.combine(month_start(v.valid_until) + dt.timedelta(days=9), dt.time(4), dt.UTC)
                issuer = Issuer(store, watcher.signer, lambda: then)
            command = IssueCommand(f"bench-{i}", v.plate_type, v.plate_number, v.vin, _GRANT, None, "")
            try:
                mark = issuer.issue(command).mark
                if kinds[i] == "superseded":  # a second grant, a new mark: the first text is the one shown
                    second = IssueCommand(f"bench-{i}-2", v.plate_type, v.plate_number, v.vin, _GRANT, None, "")
                    if issuer.issue(second).mark.serial == mark.serial:
                        raise RuntimeError(f"a TRANSFER gave {v.plate_number} its mark again: nothing superseded")
                if kinds[i] == "status":
                    store.set_status(v.plate_type, v.plate_number, statuses[i])
            except VimarkError:  # a synthetic vehicle the rules refuse: it is looked up, not scanned
                return i, None
            return i, mark.qr_text

        with ThreadPoolExecutor(32) as pool:  # concurrent Issues share group commits
            issued = dict(pool.map(issue, range(n)))

        ring = watcher.ring()
        seal = (ring.active_seal_key_id, ring.seal_keys[ring.active_seal_key_id])
        impostor = Ed25519PrivateKey.generate()
        texts: list[str] = []
        for i in range(n):
            text = issued[i]
            if text is None:
                continue
            if kinds[i] == "forged":  # a real body, signed by a key that is not the trusted one
                decoded = cert.decode(text, ring.seal_keys)
                signature = impostor.sign(cert.signed_message(decoded.key_id, decoded.body_bytes))
                text = cert.encode(decoded.body_bytes, decoded.key_id, signature, seal)
            texts.append(text)

        # The expected verdicts are the server's own, judged now on the finished store.
        index = ValidityIndex()
        index.load(*store.snapshot())
        verifier = Verifier(index, watcher, system_clock, rules.RuleConfig())
        marks = [(t, pb.Verdict.Name(verifier.verify(t).verdict).removeprefix("VERDICT_")) for t in texts]
        rng.shuffle(marks)
        stored = store.snapshot()[1]
        plates = [(v.plate_type, v.plate_number) for v in stored]
        rng.shuffle(plates)
        issuable = [
            (v.plate_type, v.plate_number)
            for v in stored
            if v.current_serial
            and not v.status_bits & BLOCKS_ROAD_MASK
            and v.valid_until
            and v.valid_until >= current
            and not v.status_bits
        ]
        rng.shuffle(issuable)
        store.close()
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        staging = path.with_name(path.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(db, staging / "vimark.db")
        shutil.copytree(keys_dir, staging / "keys")
        (staging / "dataset.json").write_text(
            json.dumps({"vehicles": n, "marks": marks, "plates": plates, "issuable": issuable}, ensure_ascii=False)
        )
        shutil.rmtree(path, ignore_errors=True)
        staging.replace(path)  # a dataset is either whole or absent
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else FULL_VEHICLES
    data = load(n)
    print(f"{data.path}: {data.vehicles:,} vehicles, {len(data.marks):,} marks shown, {len(data.issuable):,} issuable")
    for verdict, count in data.mix().most_common():
        print(f"  {verdict:<20} {count:>8,}  {count / len(data.marks):6.1%}")
    print(json.dumps({"dataset": str(data.path), "vehicles": data.vehicles, "mix": dict(data.mix())}))


__all__ = ["DATA_DIR", "Dataset", "load"]

if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
