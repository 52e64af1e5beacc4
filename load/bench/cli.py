"""vimark's benchmarks, each against a baseline measured in the same run on the same cores.

    python -m load.bench all [--quick] [--workers N] [--vehicles N]
    python -m load.bench NAME [...]       NAME: verify_unary lookup_unary verify_batch verify_latency
                                                issue_sqlite issue_postgres

Each benchmark prints its figures for people and, as the last line of its section, one JSON
object ({"benchmark", "value", "unit", "baseline", "ratio", ...}) for a script to track from commit
to commit. `--quick` shortens every measurement to about two seconds and uses a small dataset:
the CI smoke run, whose figures mean nothing. load/README.md gives the method and the results.

Servers run as subprocesses (`vimark serve` in development mode on loopback, `--role police` for
the verify benchmarks and `--role registration` for Issue, whose calls are TRANSFERs: each writes a
new mark; `--workers N` is passed when N > 1) on a private copy of the cached dataset
(load/dataset.py); the load comes from load/loadgen.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from load import dataset as datasets
from load.bench.issue import issue_postgres, issue_sqlite
from load.bench.report import commit, cpu_model
from load.bench.run import Run
from load.bench.verify import lookup_unary, verify_batch, verify_latency, verify_unary

BENCHMARKS: dict[str, Callable[[Run], None]] = {
    "verify_unary": verify_unary,
    "lookup_unary": lookup_unary,
    "verify_batch": verify_batch,
    "verify_latency": verify_latency,
    "issue_sqlite": issue_sqlite,
    "issue_postgres": issue_postgres,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("name", choices=["all", *BENCHMARKS])
    parser.add_argument("--quick", action="store_true", help="a few seconds each, small dataset (CI smoke)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (and echo processes)")
    parser.add_argument("--processes", type=int, default=0, help="load generator processes (default: one per core)")
    parser.add_argument("--vehicles", type=int, default=0, help="dataset size (default 100,000; --quick 2,000)")
    args = parser.parse_args(argv)
    vehicles = args.vehicles or (datasets.QUICK_VEHICLES if args.quick else datasets.FULL_VEHICLES)
    data = datasets.load(vehicles)
    work = Path(tempfile.mkdtemp(prefix="vimark-bench-"))
    run = Run(args.quick, args.workers, args.processes or os.cpu_count() or 1, vehicles, work, data)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    print(
        f"vimark benchmarks at {commit()} on {os.cpu_count()} cores ({cpu_model()}); server workers {run.workers}, "
        f"load processes {run.processes}; dataset {data.vehicles:,} vehicles, {len(data.marks):,} distinct marks "
        f"{dict(data.mix())}",
        flush=True,
    )
    try:
        with run.stack:
            for name in names:
                print(f"\n## {name}: {(BENCHMARKS[name].__doc__ or '').splitlines()[0]}", flush=True)
                BENCHMARKS[name](run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
