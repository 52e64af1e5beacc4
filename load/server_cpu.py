"""Server CPU and thread switches per call: what instruction counts (load.server_instructions)
leave out, the kernel's share and the cost of a server's threads handing the GIL to one another.

    python -m load.server_cpu [--rounds 3] [--seconds 8] [--only vimark-lookup ...]

The servers are load.server_instructions': the echo server (sync), the signature-only handler and
`vimark serve --role police` (development mode, one worker) on the 2,000-vehicle dataset, sent
Verify and LookupVehicleStatus. Each is loaded in closed loop by one load process (32 calls in
flight) for a 2 s warmup and then --seconds. Over those seconds, sampled from /proc every 50 ms:
the server process's user and system CPU and its threads' voluntary context switches (a thread
that blocked: on the GIL, a lock, a queue or the network), each divided by the calls completed.
Rounds alternate the servers, so a slow minute of this shared machine falls on all of them; the
lines printed are each server's medians, the JSON line has every round.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from load import dataset as datasets
from load import loadgen
from load.bench.harness import echo_command, free_port, serve, vimark_command
from load.server_instructions import SERVERS, VEHICLES, requests_for

_SAMPLE_EVERY = 0.05
_WARMUP = 2.0
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _counters(pid: int) -> tuple[float, float, int]:
    """(user seconds, system seconds, voluntary context switches of all its threads now)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                switches += next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except (OSError, StopIteration):  # a thread that ended meanwhile
            pass
    return int(fields[11]) / _CLOCK_TICK, int(fields[12]) / _CLOCK_TICK, switches


def _at(samples: list[tuple[float, tuple[float, float, int]]], t: float) -> tuple[float, float, int]:
    """The sample nearest to time t."""
    return min(samples, key=lambda s: abs(s[0] - t))[1]


def _measure(kind: str, data: datasets.Dataset, scratch: Path, seconds: float) -> dict[str, float]:
    target = f"127.0.0.1:{free_port()}"
    db, keys = data.copy_to(scratch / kind)
    if kind.startswith("vimark"):
        command = vimark_command(f"sqlite:///{db}", keys, target, "police", 1)
    else:
        command = echo_command(target, "sync" if kind == "echo" else "signature", 1)
    method, requests = requests_for(kind, data, db)
    request_file = scratch / f"{kind}.requests"
    request_file.write_bytes(pickle.dumps(requests))
    with serve(command, target, scratch / f"{kind}.log") as served:
        pid = served.process.pid
        samples: list[tuple[float, tuple[float, float, int]]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.perf_counter(), _counters(pid)))
                time.sleep(_SAMPLE_EVERY)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = loadgen.Load(target, method, request_file, duration=seconds, warmup=_WARMUP, processes=1)
        result = loadgen.run(load)
        done.set()
        sampler.join()
    start, end = result.released + _WARMUP, result.released + _WARMUP + seconds
    (user0, system0, switches0), (user1, system1, switches1) = _at(samples, start), _at(samples, end)
    calls = max(1, result.ok)
    return {
        "calls_per_second": round(result.rate, 1),
        "server_user_us": round((user1 - user0) / calls * 1e6, 1),
        "server_system_us": round((system1 - system0) / calls * 1e6, 1),
        "server_switches": round((switches1 - switches0) / calls, 2),
        "errors": sum(result.errors.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.server_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", choices=SERVERS, action="append", help="these servers (default: all)")
    args = parser.parse_args(argv)
    from vimark.server import hotpath

    data = datasets.load(VEHICLES)
    kinds = args.only or list(SERVERS)
    rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="vimark-server-cpu-") as scratch:
        for n in range(args.rounds):
            for kind in kinds:
                figures = _measure(kind, data, Path(scratch) / f"{n}", args.seconds)
                rounds[kind].append(figures)
                print(f"round {n + 1} {kind}: {figures}", flush=True)
    medians = {kind: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for kind, runs in rounds.items()}
    print(f"{'server':<15}{'calls/s':>10}{'user µs':>10}{'system µs':>11}{'switches':>10}  (medians, per call)")
    for kind, m in medians.items():
        print(
            f"{kind:<15}{m['calls_per_second']:>10,.0f}{m['server_user_us']:>10.0f}{m['server_system_us']:>11.0f}"
            f"{m['server_switches']:>10.1f}"
        )
    result = {
        "benchmark": "server_cpu",
        "compiled": hotpath.native is not None,
        "seconds": args.seconds,
        "medians": medians,
        "rounds": rounds,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
