"""A small multi-process gRPC load generator: one process per core, grpc.aio, requests
pre-encoded (or, for Issue, built from a counter so every request_id is new).

Closed loop (`rate=None`): each process keeps `concurrency` calls in flight and the figure is
completions per second, the peak. Open loop (`rate=R`): the processes together start R calls per
second at Poisson-distributed instants whatever the server does, and a call's latency runs from
the instant it was due, not from when it was sent, so a server that falls behind is charged for
the queue it causes (no coordinated omission).

Each process cycles through its own stride of the request list (process p sends p, p+P, p+2P, ...),
so with a list of 10,000 requests no request is repeated before all 10,000 have been sent.
Messages travel as bytes: the generator spends nothing on (de)serialization, so the server and
the echo baseline are measured under the same, light, client cost.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import pickle
import random
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARK_SERVICE = "/vimark.v1.MarkService/"


@dataclass(frozen=True)
class Load:
    target: str
    method: str  # e.g. "Verify"
    requests: Path  # a pickled list[bytes] to cycle through, or for "Issue" a pickled IssueSource
    duration: float
    warmup: float
    processes: int = 0  # 0: one per core
    concurrency: int = 32  # calls in flight per process (closed loop), or at most (open loop)
    rate: float | None = None  # total calls per second (open loop)
    channels: int = 4  # connections per process (spread over SO_REUSEPORT workers)
    timeout: float = 10.0


@dataclass(frozen=True)
class IssueSource:
    """Issue requests made on the fly: a new request_id every call, vehicles in turn."""

    plates: list[tuple[str, str]]
    tag: str
    reason: int


@dataclass
class Result:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array = field(default_factory=lambda: array("d"))  # seconds, calls completed in the window
    duration: float = 0.0
    offered: float | None = None
    released: float = 0.0  # time.perf_counter() when the processes were released (the warmup's start)

    @property
    def rate(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    def percentile(self, p: float) -> float:
        """Milliseconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def run(load: Load) -> Result:
    """Start the processes, release them together once all are connected, merge their results."""
    processes = load.processes or os.cpu_count() or 1
    ctx = mp.get_context("spawn")  # the parent has gRPC objects: never fork it
    results = ctx.Queue()
    ready = ctx.Barrier(processes + 1)
    procs = [
        ctx.Process(target=_child, args=(load, p, processes, ready, results), daemon=True) for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    try:
        ready.wait(timeout=60)
        merged = Result(duration=load.duration, offered=load.rate, released=time.perf_counter())
        for _ in procs:
            part = results.get(timeout=load.warmup + load.duration + load.timeout + 60)
            if isinstance(part, BaseException):
                raise part
            merged.ok += part.ok
            merged.errors.update(part.errors)
            merged.latencies.extend(part.latencies)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return merged


def _child(load: Load, index: int, processes: int, ready: Any, results: Any) -> None:
    try:
        results.put(asyncio.run(_drive(load, index, processes, ready)))
    except BaseException as exc:  # the parent re-raises it
        results.put(RuntimeError(f"load process {index}: {exc!r}"))
        ready.abort()


def _requests(load: Load, index: int, processes: int) -> Any:
    source = pickle.loads(load.requests.read_bytes())
    if isinstance(source, IssueSource):
        from vimark.v1 import mark_service_pb2 as pb

        plates = source.plates[index::processes] or source.plates

        class Issues:
            def __getitem__(self, i: int) -> bytes:
                plate_type, plate_number = plates[i % len(plates)]
                return pb.IssueRequest(
                    request_id=f"{source.tag}-{index}-{i}",
                    plate_type=plate_type,
                    plate_number=plate_number,
                    reason=source.reason,  # type: ignore[arg-type]
                ).SerializeToString()

        return Issues()
    mine: list[bytes] = source[index::processes] or source

    class Cycle:
        def __getitem__(self, i: int) -> bytes:
            return mine[i % len(mine)]

    return Cycle()


async def _drive(load: Load, index: int, processes: int, ready: Any) -> Result:
    import grpc

    requests = _requests(load, index, processes)
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    channels = [grpc.aio.insecure_channel(load.target, options=options) for _ in range(load.channels)]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    calls = [c.unary_unary(MARK_SERVICE + load.method) for c in channels]
    result = Result(duration=load.duration)
    await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
    start = time.perf_counter()
    measure_from = start + load.warmup
    end = measure_from + load.duration
    counter = iter(range(1 << 62))

    async def one(due: float) -> None:
        i = next(counter)
        code = "OK"
        try:
            await calls[i % len(calls)](requests[i], timeout=load.timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        done = time.perf_counter()
        if measure_from <= done < end:
            if code == "OK":
                result.ok += 1
                result.latencies.append(done - due)
            else:
                result.errors[code] += 1

    if load.rate is None:

        async def worker() -> None:
            while (now := time.perf_counter()) < end:
                await one(now)

        await asyncio.gather(*(worker() for _ in range(load.concurrency)))
    else:
        rng = random.Random(index)
        per_process = load.rate / processes
        limit = asyncio.Semaphore(load.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def bounded(due: float) -> None:
            async with limit:
                await one(due)

        due = start
        while due < end:
            due += rng.expovariate(per_process)
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            task = asyncio.create_task(bounded(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=load.timeout + 1)
    for channel in channels:
        await channel.close()
    return result


__all__ = ["IssueSource", "Load", "Result", "run"]
