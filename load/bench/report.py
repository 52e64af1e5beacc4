"""A benchmark's output: its figures for people, and as the last line of its section one JSON
object for a script to track from commit to commit (load/README.md lists the fields)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from load.bench.harness import ROOT
from load.loadgen import Result

if TYPE_CHECKING:
    from load.bench.run import Run


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return head.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except OSError:
        return "unknown"


def latency_fields(result: Result) -> dict[str, float]:
    return {f"p{p}_ms".replace(".", "_"): round(result.percentile(p), 3) for p in (50, 90, 99, 99.9)}


def show(label: str, result: Result, unit: str = "calls/s") -> None:
    errors = f"  errors {dict(result.errors)}" if result.errors else ""
    print(
        f"  {label:<28} {result.rate:>10,.0f} {unit}  p50 {result.percentile(50):.2f} ms  "
        f"p99 {result.percentile(99):.2f} ms{errors}",
        flush=True,
    )


def report(run: Run, name: str, value: float, unit: str, baseline: float, baseline_name: str, **extra: Any) -> None:
    """The section's verdict line, then its JSON line (the section's last)."""
    ratio = value / baseline if baseline else 0.0
    print(f"  => {name}: {value:,.2f} {unit} vs {baseline_name} {baseline:,.2f}: ratio {ratio:.3f}")
    line = {
        "benchmark": name,
        "value": round(value, 3),
        "unit": unit,
        "baseline": round(baseline, 3),
        "baseline_name": baseline_name,
        "ratio": round(ratio, 3),
        **extra,
        "workers": run.workers,
        "load_processes": run.processes,
        "vehicles": run.data.vehicles,
        "duration_s": run.duration,
        "quick": run.quick,
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "commit": commit(),
    }
    print(json.dumps(line, ensure_ascii=False), flush=True)


def skipped(name: str, why: str) -> None:
    """The JSON line of a benchmark that could not run here."""
    print(json.dumps({"benchmark": name, "skipped": why}))
