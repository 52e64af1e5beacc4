"""Instructions per call of the verify and lookup paths, counted by valgrind's callgrind: a figure
that the load of a shared machine cannot move (the same code and inputs give the same count).

    python -m load.instructions [--calls 500] [--vehicles 4000] [--only verify]

Each workload runs in a fresh Python under `valgrind --tool=callgrind` twice, making `--calls`
calls and then twice as many (PYTHONHASHSEED fixed), the calls inside one `functools.reduce` and
only that counted (`--toggle-collect=functools_reduce`: not the imports, the index or the marks
made before); the difference of the two totals over the difference of the calls is the count per
call (about 800 of it the loop's own lambda). Workloads, in process, no gRPC:
- verify: what Verify does between the wire and its reply: `Verifier.check` of distinct current
  marks (the compiled path, or the Python path with VIMARK_PURE_PYTHON=1) and the police view of
  its answer (views.checked_response), signature excluded: libsodium's crypto_sign_open is run, and
  its inclusive count (callgrind_annotate) subtracted, so the figure is the cost vimark adds to a
  signature on either path (`verify_with_signature` keeps the total);
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
_SIGNATURE_FUNCTION = "crypto_sign_open"  # libsodium's Ed25519 verify, on both paths


def _inclusive(out: Path, function: str) -> int:
    """The inclusive instruction count of `function` in a callgrind output file (0 if never called)."""
    command = ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)]
    report = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = re.compile(r"^\s*([\d,]+)\s.*:" + function + r"\s")
    return max((int(m.group(1).replace(",", "")) for m in map(line.match, report.splitlines()) if m), default=0)


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
    from vimark.server.views import checked_response, lookup_response

    index, trust, texts = build(vehicles)  # the same in both runs of a workload: its cost cancels out
    verifier = Verifier(index, trust, lambda: NOW)
    seals = trust.current().seal_keys
    bodies = [cert.decode(t, seals).body for t in texts[:calls]]
    on = china_date(NOW)

    def verify(text: str) -> None:
        checked = verifier.check(text)
        assert checked.verdict == Verdict.VERDICT_VALID, checked.verdict
        checked_response(checked, View.FULL)

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


def _count(name: str, calls: int, vehicles: int, scratch: Path) -> tuple[int, int]:
    """(instructions counted, of which inside the signature check)."""
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
    return int(found.group(1)), _inclusive(out, _SIGNATURE_FUNCTION)


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
    from vimark.server import hotpath

    result: dict[str, object] = {
        "benchmark": "instructions",
        "calls": args.calls,
        "vehicles": vehicles,
        "compiled": hotpath.native is not None,
    }
    scratch = Path(tempfile.mkdtemp(prefix="vimark-callgrind-"))
    try:
        for name in args.only or WORKLOADS:
            counts = (_count(name, n, vehicles, scratch) for n in (args.calls, 2 * args.calls))
            (small, small_sig), (large, large_sig) = counts
            per_call = (large - small) / args.calls
            signature = (large_sig - small_sig) / args.calls if name == "verify" else 0.0
            print(f"{name}: {per_call - signature:,.0f} instructions per call"
                  + (f" with the signature excluded ({per_call:,.0f} with it)" if signature else "")
                  + f" ({small:,} for {args.calls:,} calls, {large:,} for {2 * args.calls:,})", flush=True)  # fmt: skip
            result[f"{name}_instructions"] = round(per_call - signature)
            if signature:
                result[f"{name}_with_signature_instructions"] = round(per_call)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
