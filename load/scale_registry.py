"""Province-scale registries for load.scale: built once per size and day, cached under load/.data/."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vimark.client.domain import china_date, month_of, system_clock
from vimark.client.errors import VimarkError
from vimark.server.demo import demo_vehicles
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.keys import KeyDirectory
from vimark.server.records import VehicleRecord
from vimark.server.store import Store
from vimark.server.sync import ReloadableKeyRing
from vimark.v1 import certificate_pb2

DATA_DIR = Path(__file__).resolve().parent / ".data"
FORMAT = 1  # bump when the registry generator changes
SEED = 2026
REFERENCE_VEHICLES = 20_000
MARKS = 2_000  # marks issued (in-process, TRANSFER) for a sample of vehicles
LOOKUP_PLATES = 10_000
SLOW_PART = 20_000  # with --fast-build: vehicles written through upsert_vehicles (the measured rate)
TRANSFER = certificate_pb2.ISSUE_REASON_TRANSFER


@dataclass(frozen=True)
class Registry:
    path: Path
    vehicles: int
    import_rate: float | None  # None: reused from the cache
    import_measured_on: int
    fast_build: bool
    marks: list[str]
    plates: list[tuple[str, str]]

    @property
    def db(self) -> Path:
        return self.path / "vimark.db"

    @property
    def keys(self) -> Path:
        return self.path / "keys"


def say(line: str) -> None:
    print(line, flush=True)


# -- building ----------------------------------------------------------------------------------
def registry(n: int, *, fast_build: bool) -> Registry:
    today = china_date(system_clock())
    key = hashlib.sha256(f"{FORMAT}:{n}:{SEED}:{today}".encode()).hexdigest()[:12]
    path = DATA_DIR / f"scale-{n}-{key}"
    manifest = path / "scale.json"
    fresh = not manifest.exists()
    if fresh:
        say(f"building a registry of {n:,} vehicles in {path} (cached for later runs)...")
        _build(path, n, fast_build=fast_build)
    data = json.loads(manifest.read_text())
    return Registry(
        path=path,
        vehicles=data["vehicles"],
        import_rate=data["import_rate"] if fresh else None,
        import_measured_on=data["import_measured_on"],
        fast_build=data["fast_build"],
        marks=data["marks"],
        plates=[(t, p) for t, p in data["plates"]],
    )


def _fast_rows(db: Path, vehicles: list[VehicleRecord]) -> None:
    """The rows upsert_vehicles would insert into an empty registry, in one transaction (no change
    log: a server loads the vehicles table itself)."""
    conn = sqlite3.connect(db)
    try:
        conn.executemany(
            "INSERT INTO vehicles (plate_type, plate_number, vin, category, registered_on, seats,"
            " exemption_lost, status_bits, valid_until, current_serial) VALUES (?,?,?,?,?,?,?,?,?,0)",
            (
                (
                    v.plate_type,
                    v.plate_number,
                    v.vin,
                    v.category.value,
                    v.registered_on.isoformat(),
                    v.seats,
                    int(v.exemption_lost),
                    v.status_bits,
                    v.valid_until,
                )
                for v in vehicles
            ),
        )
        conn.commit()
    finally:
        conn.close()


def _build(path: Path, n: int, *, fast_build: bool) -> None:
    staging = path.with_name(path.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    db, keys = staging / "vimark.db", staging / "keys"
    KeyDirectory(keys).init()
    today = china_date(system_clock())
    vehicles = demo_vehicles(n, today, SEED)
    store = Store(f"sqlite:///{db}")  # migrated; the store's own (durable) settings
    slow = min(n, SLOW_PART) if fast_build else n
    started = time.perf_counter()
    for start in range(0, slow, 1000):
        store.upsert_vehicles(vehicles[start : min(start + 1000, slow)])
        if start and start % 100_000 == 0:
            say(f"  {start:,} vehicles through upsert_vehicles, {start / (time.perf_counter() - started):,.0f}/s")
    rate = slow / (time.perf_counter() - started)
    say(f"  upsert_vehicles: {slow:,} vehicles at {rate:,.0f}/s")
    if slow < n:
        store.close()
        t = time.perf_counter()
        _fast_rows(db, vehicles[slow:])
        say(f"  executemany: {n - slow:,} vehicles in {time.perf_counter() - t:.1f}s")
        store = Store(f"sqlite:///{db}")

    # Marks for a sample of vehicles the rules will grant a TRANSFER to (within validity, no status).
    rng = random.Random(SEED)
    current = month_of(today)
    eligible = [v for v in vehicles if v.valid_until is not None and v.valid_until >= current and not v.status_bits]
    sample = rng.sample(eligible, min(MARKS, len(eligible)))
    issuer = Issuer(store, ReloadableKeyRing(KeyDirectory(keys)).signer, system_clock)

    def issue(i: int) -> str | None:
        v = sample[i]
        with contextlib.suppress(VimarkError):
            command = IssueCommand(f"scale-{i}", v.plate_type, v.plate_number, v.vin, TRANSFER, None, "")
            text: str = issuer.issue(command).mark.qr_text
            return text
        return None

    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        marks = [m for m in pool.map(issue, range(len(sample))) if m]
    say(f"  {len(marks):,} marks issued in {time.perf_counter() - t:.1f}s")
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    plates = [(v.plate_type, v.plate_number) for v in rng.sample(vehicles, min(LOOKUP_PLATES, n))]
    (staging / "scale.json").write_text(
        json.dumps(
            {
                "vehicles": n,
                "import_rate": rate,
                "import_measured_on": slow,
                "fast_build": slow < n,
                "marks": marks,
                "plates": plates,
            },
            ensure_ascii=False,
        )
    )
    shutil.rmtree(path, ignore_errors=True)
    staging.replace(path)
