"""Memory of the validity index per vehicle, at a given size (default 1 million vehicles).

    python -m load.index_memory [N]

Prints the bytes the index's arrays hold per vehicle, the process's resident-memory growth per
vehicle while holding it (the honest figure: it includes allocator slack), and the lookup time.
Baseline: the same vehicles as a plain dict of VehicleRecord objects, measured in the same run.
The last line is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import random
import sys
import time

from vimark.client.domain import VehicleCategory
from vimark.server.index import ValidityIndex
from vimark.server.records import VehicleRecord


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def vehicles(n: int) -> list[VehicleRecord]:
    provinces = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
    return [
        VehicleRecord(
            vehicle_id=i,
            plate_type="02",
            plate_number=f"{provinces[i % 31]}{chr(65 + i // 31 % 26)}{i % 100000:05d}",
            vin=f"LSVAB2BJ5K{i:07d}",
            category=VehicleCategory.SMALL_PASSENGER,
            registered_on=dt.date(2020, 1, 1),
            seats=5,
            exemption_lost=False,
            status_bits=0,
            valid_until=24317,
            current_serial=i,
        )
        for i in range(1, n + 1)
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    records = vehicles(n)
    gc.collect()
    before = rss_bytes()
    index = ValidityIndex()
    started = time.perf_counter()
    index.load(0, records, [])
    load_seconds = time.perf_counter() - started
    gc.collect()
    index_rss = rss_bytes() - before
    sample = random.Random(1).sample(records, 10_000)
    started = time.perf_counter()
    for v in sample:
        assert index.by_plate(v.plate_type, v.plate_number) is not None
    lookup_us = (time.perf_counter() - started) / len(sample) * 1e6

    before = rss_bytes()
    baseline = {(v.plate_type, v.plate_number): VehicleRecord(**v.__dict__) for v in records}
    gc.collect()
    baseline_rss = rss_bytes() - before
    print(f"vehicles                       {n:>12,}")
    print(f"index arrays, bytes/vehicle    {index.nbytes() / n:>12.1f}")
    print(f"index RSS growth, bytes/vehicle{index_rss / n:>12.1f}")
    print(f"dict-of-records baseline, B/veh{baseline_rss / n:>12.1f}")
    print(f"load seconds                   {load_seconds:>12.2f}")
    print(f"by_plate lookup, microseconds  {lookup_us:>12.2f}")
    print(
        json.dumps(
            {
                "benchmark": "index_memory",
                "value": round(index_rss / n, 1),
                "unit": "bytes/vehicle",
                "baseline": round(baseline_rss / n, 1),
                "ratio": round(index_rss / baseline_rss, 3),
                "arrays_bytes_per_vehicle": round(index.nbytes() / n, 1),
                "vehicles": n,
                "lookup_us": round(lookup_us, 2),
                "load_s": round(load_seconds, 2),
            }
        )
    )
    del baseline


if __name__ == "__main__":
    main()
