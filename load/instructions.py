"""Instructions per call of the verify and lookup paths, counted by valgrind's callgrind: a figure
that the load of a shared machine cannot move (the same code and inputs give the same count).

    python -m load.instructions [--calls 500] [--vehicles 4000] [--only verify]

Each workload runs in a fresh Python under `valgrind --tool=callgrind` twice, making `--calls`
calls and then twice as many (PYTHONHASHSEED fixed), the calls inside one `functools.reduce` and
only that counted (`--toggle-collect=functools_reduce`: not the imports, the index or the marks
made before); the difference of the two totals over the difference of the calls is the count per
call (about 800 of it the loop's own lambda). Workloads, in process, no gRPC:
- verify: `Verifier.verify` of distinct current marks with the signature excluded (a checker that
  answers "authentic", measurement only), then the police view of the verdict (views.verify_response):
  the Python vimark adds to a signature;
- signature: the Ed25519 check of the same marks alone (client.trust.verify_signature), for scale;
- lookup: what LookupVehicleStatus does between the wire and its reply: the plate parsed,
  `ValidityIndex.by_plate`, `VehicleStanding.of` and the police view (views.lookup_response).
Prints one line per workload and, last, a JSON object. load/README.md keeps the counts per commit.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKLOADS = ("verify", "signature", "lookup")
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _workload(name: str, calls: int, vehicles: int) -> None:
    """Run `calls` calls of one workload (in the process valgrind watches)."""
    from load.verify_engine import NOW, build
    from vimark.client import certificate as cert
    from vimark.client.domain import china_date, parse_plate_number, parse_plate_type
    from vimark.client.judging import Verdict
    from vimark.client.trust import verify_signature
    from vimark.server import rules
    from vimark.server.policy import View
    from vimark.server.verifier import VehicleStanding, Verifier
    from vimark.server.views import lookup_response, verify_response

    index, trust, texts = build(vehicles)  # the same in both runs of a workload: its cost cancels out

    class _AlwaysAuthentic:  # measurement only: the signature is counted by its own workload
        def check(self, *_: bytes) -> bool:
            return True

    verifier = Verifier(index, trust, lambda: NOW, signatures=_AlwaysAuthentic())  # type: ignore[arg-type]
    seals = trust.current().seal_keys
    bodies = [cert.decode(t, seals).body for t in texts[:calls]]
    on = china_date(NOW)

    def verify(text: str) -> None:
        verification = verifier.verify(text)
        assert verification.verdict == Verdict.VERDICT_VALID, verification.verdict
        verify_response(verification, View.FULL)

    def lookup(body: cert.CertificateBody) -> None:
        vehicle = index.by_plate(parse_plate_type(body.plate_type), parse_plate_number(body.plate_number))
        assert vehicle is not None
        lookup_response(VehicleStanding.of(vehicle, on, rules.DEFAULT_CONFIG), View.FULL)

    def signature(item: tuple[bytes, bytes, bytes]) -> None:
        assert verify_signature(*item)

    work: dict[str, tuple[Callable[[Any], None], list[Any]]] = {
        "verify": (verify, texts[:calls]),
        "lookup": (lookup, bodies),
        "signature": (signature, [trust.current().claim(t).signed for t in texts[:calls]]),
    }
    step, items = work[name]
    # Counted: only what runs inside functools.reduce (callgrind --toggle-collect=functools_reduce).
    functools.reduce(lambda _, item: step(item), items, None)


def _count(name: str, calls: int, vehicles: int, scratch: Path) -> int:
    out = scratch / f"{name}-{calls}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--collect-atstart=no",
        "--toggle-collect=functools_reduce",
        sys.executable,
        "-m",
        "load.instructions",
        "--run",
        name,
        "--calls",
        str(calls),
        "--vehicles",
        str(vehicles),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    found = _COLLECTED.search(done.stderr)
    if done.returncode or not found:
        raise RuntimeError(f"callgrind run of {name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--vehicles", type=int, default=4_000, help="in the index (at least 2 x --calls)")
    parser.add_argument("--only", choices=WORKLOADS, action="append", help="these workloads (default: all)")
    parser.add_argument("--run", choices=WORKLOADS, help=argparse.SUPPRESS)  # inside valgrind
    args = parser.parse_args(argv)
    if args.run:
        _workload(args.run, args.calls, args.vehicles)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    vehicles = max(args.vehicles, 2 * args.calls)  # a distinct mark per call
    result: dict[str, object] = {"benchmark": "instructions", "calls": args.calls, "vehicles": vehicles}
    scratch = Path(tempfile.mkdtemp(prefix="vimark-callgrind-"))
    try:
        for name in args.only or WORKLOADS:
            small, large = (_count(name, n, vehicles, scratch) for n in (args.calls, 2 * args.calls))
            per_call = (large - small) / args.calls
            print(f"{name}: {per_call:,.0f} instructions per call ({small:,} for {args.calls:,} calls,"
                  f" {large:,} for {2 * args.calls:,})", flush=True)  # fmt: skip
            result[f"{name}_instructions"] = round(per_call)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
