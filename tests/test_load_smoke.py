"""Smoke test of load/: every benchmark and the locust scenario still run (a few seconds each).

The figures of a --quick run mean nothing; this checks that each benchmark ends with a parsable
JSON line with a positive value and ratio, and that the locust report exists with zero failures.
The full runs (load/README.md) are not timed tests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = (sys.executable, "-m", "load.scenario", "--duration", "6s", "--users", "6", "--spawn-rate", "6")
BENCHMARKS = ("verify_unary", "lookup_unary", "verify_batch", "verify_latency", "issue_sqlite", "issue_postgres")


def test_benchmarks_quick() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "load.bench", "all", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"benchmark"')]
    found = {line["benchmark"]: line for line in lines}
    assert set(found) == set(BENCHMARKS), run.stdout[-3000:]
    for name, line in found.items():
        if "skipped" in line and name == "issue_postgres" and not os.environ.get("VIMARK_REQUIRE_POSTGRES"):
            continue
        assert line["value"] > 0 and line["baseline"] > 0 and line["ratio"] > 0, line
    # each section's JSON is its last line: nothing of the section follows it
    sections = run.stdout.split("\n## ")[1:]
    for section in sections:
        assert section.rstrip().splitlines()[-1].startswith('{"benchmark"'), section[-500:]


def test_locust_scenario(tmp_path: Path) -> None:
    # locust is a declared test dependency and runs in its own process: importing it here would
    # let gevent monkey-patch this pytest process's threads and sockets under every later test.
    run = subprocess.run(
        [*SCENARIO, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "locust.html").stat().st_size > 0
    with (tmp_path / "locust_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, total


def test_server_cpu_quick() -> None:
    """load.server_cpu's figures come from the server's own /proc counters over the measured window."""
    command = [sys.executable, "-m", "load.server_cpu", "--rounds", "1", "--seconds", "1", "--only", "vimark-lookup"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    (figures,) = result["rounds"]["vimark-lookup"]
    assert figures["calls_per_second"] > 0 and figures["errors"] == 0, figures
    assert figures["server_user_us"] + figures["server_system_us"] > 0 and figures["server_switches"] > 0, figures
