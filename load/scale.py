"""Province scale (issue 9 item 7): what one node costs at N vehicles, measured against the same
figures at a small registry (or an empty one) in the same run.

    python -m load.scale --vehicles 1000000 --seconds 5 [--fast-build] [--quick] [--no-postgres]

Prints each figure as a line and, last, one JSON object with all of them:
- import_rate: vehicles/s of `vimark vehicles import` (the ImportVehicles stream, each batch
  durable) of the registry's first vehicles (at most 1 M) into an empty server on a SQLite file.
- issue_during_import_p99_ms: latency of Issues sent one at a time, 20 a second, while that
  import runs (the import must not stall Issue for more than about 100 ms).
- backfill_rate: marks/s of `vimark marks backfill` (BackfillMarks, every vehicle) on that server
  right after the import: each vehicle within its validity gets its first mark, in id order.
- backfill_list_rate: marks/s of BackfillMarks for a list of 50,000 plates spread over the
  N-vehicle registry (one vehicle in N/50,000: each mark's vehicle row on a page of its own).
- upsert_rate: vehicles/s of `Store.upsert_vehicles` while building the registry (first build only;
  with --fast-build only the first 20,000 go that way, the rest by executemany).
- cold_start_store_s / cold_start_checkpoint_s: seconds from starting `vimark serve` to health
  SERVING, first with no checkpoint (the index streamed from the store, a checkpoint written as it
  goes), then again from that checkpoint.
- rss_steady/peak_bytes_per_vehicle (and checkpoint_rss_*): VmRSS once SERVING and VmHWM, minus the
  same of a server on an empty database, over N; rss_after_use_bytes_per_vehicle after the rate runs
  (text pages the lookups touched included); workers_2_node_*: `--workers 2`, RSS and Pss summed
  over the processes (Pss splits the pages the workers share).
- verify_rate / lookup_rate: closed-loop Verify and LookupVehicleStatus at N and at 20,000
  vehicles, medians of --rounds alternating runs with both servers up, and their ratios.
- replica_lag_p99_ms: two servers on one scratch PostgreSQL database; Issues at about 300/s on A,
  the time until B's LookupVehicleStatus shows each new serial.

Registries are cached under load/.data/ keyed by N (and today's date: marks are judged today);
servers run on a private copy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from load.scale_registry import DATA_DIR, REFERENCE_VEHICLES, SLOW_PART, registry, say
from load.scale_serving import backfill_rate, first_load, measure, measure_workers, rates, replica_lag


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


# -- the command -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate measurement")
    parser.add_argument("--quick", action="store_true", help="2,000 vehicles against 1,000, 1 s rates, 60 Issues")
    fast_help = f"only the first {SLOW_PART:,} vehicles through upsert_vehicles, the rest by executemany"
    parser.add_argument("--fast-build", action="store_true", help=fast_help)
    parser.add_argument("--no-postgres", action="store_true", help="skip the replica lag")
    parser.add_argument(
        "--no-import", action="store_true", help="skip timing the import (1 M at most) and the full backfill after it"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rate runs at N and at the reference")
    args = parser.parse_args(argv)
    n, reference, seconds, issues = args.vehicles, REFERENCE_VEHICLES, args.seconds, 1500
    if args.quick:
        n, reference, seconds, issues = min(n, 2_000), 1_000, 1.0, 60
        args.rounds = 1
    say(f"load.scale: {n:,} vehicles against {reference:,}, {seconds:g} s per rate, {os.cpu_count()} cores")

    reg = registry(n, fast_build=args.fast_build)
    ref = registry(reference, fast_build=False)
    result: dict[str, Any] = {"benchmark": "scale", "vehicles": n, "reference_vehicles": reference}
    if reg.import_rate is None:
        say("upsert_rate: null (registry reused from the cache)")
    else:
        how = f"first {reg.import_measured_on:,} vehicles, rest by --fast-build" if reg.fast_build else "all vehicles"
        say(f"upsert_rate: {reg.import_rate:,.0f} vehicles/s through upsert_vehicles ({how})")
    rate = None if reg.import_rate is None else round(reg.import_rate, 1)
    result.update(upsert_rate=rate, upsert_measured_on=reg.import_measured_on, fast_build=reg.fast_build)

    work = Path(tempfile.mkdtemp(prefix="scale-run-", dir=DATA_DIR))
    try:
        empty = measure(None, reg.keys, work, "empty")
        big = measure(reg, reg.keys, work, f"n{n}")
        measure(ref, ref.keys, work, f"n{reference}")  # its checkpoint, for the rate runs
        run = rates(reg, ref, work, seconds, args.rounds)
        load = None if args.no_import else first_load(reg, reg.keys, work)
        issue_p99: float | None = None
        if load:
            imported, backfilled = f"{load.imported:,}", f"{load.backfilled:,}"
            say(
                f"import_rate: {load.imported / load.import_s:,.0f} vehicles/s ({imported} by `vimark vehicles import`)"
            )
            say(f"backfill_rate: {load.backfilled / load.backfill_s:,.0f} marks/s ({backfilled}, `marks backfill`)")
            ms = sorted(load.issue_ms)
            issue_p99 = ms[int(len(ms) * 0.99)] if ms else None
            say(
                f"issue_during_import: p50 {ms[len(ms) // 2]:.1f} ms, p99 {issue_p99:.1f} ms, max {ms[-1]:.1f} ms"
                f" ({len(ms)} Issues, {load.issue_errors} errors)"
                if ms
                else "issue_during_import: no Issue was answered while the import ran"
            )
        else:
            say("import_rate, backfill_rate: skipped (--no-import)")
        listed, listed_s = backfill_rate(reg, work)
        say(f"backfill_list_rate: {listed / listed_s:,.0f} marks/s ({listed:,} by BackfillMarks for a list, at {n:,})")
        node_empty = measure_workers(None, reg.keys, work, "empty")
        node_big = measure_workers(reg, reg.keys, work, f"n{n}")
        steady = (big.rss - empty.rss) / n
        peak = (big.hwm - empty.hwm) / n
        used = (run.rss_after_use - empty.checkpoint_rss) / n
        ck_steady, ck_peak = (
            (big.checkpoint_rss - empty.checkpoint_rss) / n,
            (big.checkpoint_hwm - empty.checkpoint_hwm) / n,
        )
        say(f"cold_start_store_s: {big.cold_start_s:.2f} s at {n:,} vehicles (empty: {empty.cold_start_s:.2f} s)")
        say(f"cold_start_checkpoint_s: {big.checkpoint_start_s:.2f} s (empty: {empty.checkpoint_start_s:.2f} s)")
        say(f"rss_steady_bytes_per_vehicle: {steady:,.0f} (VmRSS {_mib(big.rss)}, empty {_mib(empty.rss)})")
        say(f"rss_peak_bytes_per_vehicle: {peak:,.0f} (VmHWM {_mib(big.hwm)}, empty {_mib(empty.hwm)})")
        say(f"rss_after_use_bytes_per_vehicle: {used:,.0f} (after the Verify and Lookup runs, above empty)")
        say(f"checkpoint start: steady {ck_steady:,.0f} B/vehicle, peak {ck_peak:,.0f} B/vehicle")
        node_rss, node_pss = ((b - e) / n for b, e in zip(node_big, node_empty, strict=True))
        say(f"workers_2_node_bytes_per_vehicle: RSS {node_rss:,.0f}, Pss {node_pss:,.0f} (both workers, above empty)")
        verify_rate, lookup_rate = statistics.median(run.verify), statistics.median(run.lookup)
        verify_reference, lookup_reference = (
            statistics.median(run.verify_reference),
            statistics.median(run.lookup_reference),
        )
        verify_ratio, lookup_ratio = verify_rate / verify_reference, lookup_rate / lookup_reference
        at_n, at_ref = f"at {n:,}", f"at {reference:,} (medians of {args.rounds} alternating runs)"
        say(f"verify_rate: {verify_rate:,.0f}/s {at_n}, {verify_reference:,.0f}/s {at_ref}: {verify_ratio:.3f}")
        say(f"lookup_rate: {lookup_rate:,.0f}/s {at_n}, {lookup_reference:,.0f}/s {at_ref}: {lookup_ratio:.3f}")
        result.update(
            cold_start_store_s=round(big.cold_start_s, 3),
            cold_start_empty_s=round(empty.cold_start_s, 3),
            import_rate=round(load.imported / load.import_s, 1) if load else None,
            import_vehicles=load.imported if load else 0,
            backfill_rate=round(load.backfilled / load.backfill_s, 1) if load else None,
            backfill_marks=load.backfilled if load else 0,
            backfill_list_rate=round(listed / listed_s, 1),
            issue_during_import_p99_ms=round(issue_p99, 1) if load and issue_p99 is not None else None,
            issue_during_import_max_ms=round(max(load.issue_ms), 1) if load and load.issue_ms else None,
            issues_during_import=len(load.issue_ms) if load else 0,
            backfill_list_marks=listed,
            cold_start_checkpoint_s=round(big.checkpoint_start_s, 3),
            rss_after_use_bytes_per_vehicle=round(used, 1),
            checkpoint_rss_steady_bytes_per_vehicle=round(ck_steady, 1),
            checkpoint_rss_peak_bytes_per_vehicle=round(ck_peak, 1),
            workers_2_node_rss_bytes_per_vehicle=round(node_rss, 1),
            workers_2_node_pss_bytes_per_vehicle=round(node_pss, 1),
            rss_steady_bytes_per_vehicle=round(steady, 1),
            rss_peak_bytes_per_vehicle=round(peak, 1),
            rss_bytes=big.rss,
            hwm_bytes=big.hwm,
            empty_rss_bytes=empty.rss,
            empty_hwm_bytes=empty.hwm,
            verify_rate=round(verify_rate, 1),
            verify_rate_reference=round(verify_reference, 1),
            verify_rates=[round(r, 1) for r in run.verify],
            verify_rates_reference=[round(r, 1) for r in run.verify_reference],
            lookup_rates=[round(r, 1) for r in run.lookup],
            lookup_rates_reference=[round(r, 1) for r in run.lookup_reference],
            verify_ratio=round(verify_ratio, 3),
            lookup_rate=round(lookup_rate, 1),
            lookup_rate_reference=round(lookup_reference, 1),
            lookup_ratio=round(lookup_ratio, 3),
            marks=len(reg.marks),
            seconds=seconds,
        )
        if args.no_postgres:
            result["replica_lag_p99_ms"] = None
            result["replica_lag_skipped"] = "--no-postgres"
            say("replica_lag_p99_ms: skipped (--no-postgres)")
        else:
            try:
                lag = replica_lag(reg.keys, work, issues, 300.0)
            except Exception as exc:  # PostgreSQL unreachable (or the scratch database refused)
                lag = {"skipped": f"PostgreSQL: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            if "skipped" in lag:
                result.update(replica_lag_p99_ms=None, replica_lag_skipped=lag["skipped"])
                say(f"replica_lag_p99_ms: skipped ({lag['skipped']})")
            else:
                rounded = {k: round(v, 1) for k, v in lag.items()}
                result.update(replica_lag_p99_ms=rounded["p99_ms"], replica_lag=rounded)
                say(
                    f"replica_lag_p99_ms: {lag['p99_ms']:.1f} (p50 {lag['p50_ms']:.1f}, max {lag['max_ms']:.1f};"
                    f" {lag['issues']} Issues at {lag['issue_rate']:.0f}/s, {lag['errors']} errors)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["date"] = dt.date.today().isoformat()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
