"""Instructions per call of whole server processes, counted by valgrind's callgrind: what one call
costs a server, gRPC and every layer around the handler included, in a figure that the load of a
shared machine cannot move.

    python -m load.server_instructions [--calls 1000] [--in-flight 16] [--only vimark-verify ...]

Each server runs under `valgrind --tool=callgrind --instr-atstart=no` on loopback: the echo server
(load/echo.py, sync), the signature-only handler (echo plus one Ed25519 check a call), and a
`vimark serve --role police` (development mode, one worker, audited as police calls are) on the
cached 2,000-vehicle dataset, sent Verify (its marks, every verdict as the dataset has them) or
LookupVehicleStatus (its plates). After a warmup, counting is switched on (`callgrind_control -i
on`), `--calls` calls are made with `--in-flight` outstanding, and counting is switched off half a
second later (the audit writer's last flush of those calls included). Threads that run by the
clock (the index following the store, the audit writer's flush, key reloads) run meanwhile, slowed
as everything is; so counting is also switched on for as long again with no calls, and that idle
count is subtracted. Prints one line per server and, last, a JSON object; load/README.md keeps the
counts per commit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import grpc

from load import dataset as datasets
from load.bench.harness import VIMARK_IN_PYTHON, echo_command, free_port, vimark_command

SERVERS = ("echo", "signature", "vimark-verify", "vimark-lookup")
VEHICLES = 2000
_TOTALS = "totals:"
_SETTLE = 0.5  # seconds after the last call before counting stops: over the audit writer's 0.2 s flush


def requests_for(kind: str, data: datasets.Dataset, db: Path) -> tuple[str, list[bytes]]:
    from vimark.v1 import mark_service_pb2 as pb

    if kind == "vimark-lookup":
        with sqlite3.connect(db) as conn:
            plates = conn.execute("SELECT plate_type, plate_number FROM vehicles ORDER BY id").fetchall()
        return "LookupVehicleStatus", [
            pb.LookupVehicleStatusRequest(plate_type=t, plate_number=n).SerializeToString() for t, n in plates
        ]
    return "Verify", [pb.VerifyRequest(qr_text=t).SerializeToString() for t, _ in data.marks]


def _counted(out: Path) -> int:
    """The instructions in callgrind's dumps of one run (the dump taken when counting stopped)."""
    total = 0
    for part in out.parent.glob(out.name + "*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith(_TOTALS):
                total += int(line.split()[1])
    return total


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _measure(kind: str, calls: int, in_flight: int, data: datasets.Dataset, scratch: Path) -> dict[str, float]:
    db, keys = data.copy_to(scratch / kind)
    target = f"127.0.0.1:{free_port()}"
    if kind.startswith("vimark"):
        # Python itself, not the `vimark` script, which may be a shell shim (pyenv) valgrind would trace.
        command = vimark_command(f"sqlite:///{db}", keys, target, "police", 1, executable=VIMARK_IN_PYTHON)
    else:
        command = echo_command(target, "sync" if kind == "echo" else "signature", 1)
    method, requests = requests_for(kind, data, db)
    out = scratch / f"{kind}.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    log = (scratch / f"{kind}.log").open("w")
    server = subprocess.Popen(valgrind + command, stdout=log, stderr=subprocess.STDOUT)
    try:
        channel = grpc.insecure_channel(target)
        call = channel.unary_unary(f"/vimark.v1.MarkService/{method}")
        grpc.channel_ready_future(channel).result(timeout=600)
        deadline = time.monotonic() + 600
        while True:  # serving once the index is loaded
            try:
                call(requests[0], timeout=60)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        for request in requests[:200]:
            call(request, timeout=60)
        _control(server.pid, "-i", "on")
        started = time.monotonic()
        pending: deque[grpc.Future] = deque()
        for k in range(calls):
            if len(pending) == in_flight:
                pending.popleft().result(timeout=60)
            pending.append(call.future(requests[k % len(requests)], timeout=60))
        for future in pending:
            future.result(timeout=60)
        time.sleep(_SETTLE)  # the audit writer's last flush of these calls falls inside the window
        busy = time.monotonic() - started
        _control(server.pid, "-i", "off")
        _control(server.pid, "-d")
        with_calls = _counted(out)
        for part in out.parent.glob(out.name + "*"):
            part.unlink()
        _control(server.pid, "-i", "on")
        time.sleep(busy)
        _control(server.pid, "-i", "off")
        _control(server.pid, "-d")
        idle = _counted(out)
        channel.close()
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    return {"per_call": (with_calls - idle) / calls, "raw_per_call": with_calls / calls, "idle_per_second": idle / busy}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.server_instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--only", choices=SERVERS, action="append", help="these servers (default: all)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    from vimark.server import hotpath

    data = datasets.load(VEHICLES)
    result: dict[str, object] = {
        "benchmark": "server_instructions",
        "calls": args.calls,
        "in_flight": args.in_flight,
        "vehicles": VEHICLES,
        "compiled": hotpath.native is not None,
    }
    scratch = Path(tempfile.mkdtemp(prefix="vimark-server-callgrind-"))
    try:
        for kind in args.only or SERVERS:
            counts = _measure(kind, args.calls, args.in_flight, data, scratch)
            print(
                f"{kind}: {counts['per_call']:,.0f} instructions per call "
                f"({counts['raw_per_call']:,.0f} before the idle threads' "
                f"{counts['idle_per_second']:,.0f}/s are taken out)",
                flush=True,
            )
            result[f"{kind}_instructions"] = round(counts["per_call"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for kind, base in (("vimark-verify", "signature"), ("vimark-lookup", "echo")):
        if f"{kind}_instructions" in result and f"{base}_instructions" in result:
            ratio = result[f"{base}_instructions"] / result[f"{kind}_instructions"]  # type: ignore[operator]
            print(f"{base} / {kind}: {ratio:.3f}")
            result[f"{base}_over_{kind}"] = round(ratio, 3)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
