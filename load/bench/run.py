"""One run's shared state: the dataset, a work directory, the load generator's settings, the
police server the verify benchmarks share, and the echo baselines measured so far."""

from __future__ import annotations

import contextlib
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load import dataset as datasets
from load import loadgen
from load.bench.harness import Served, echo_command, free_port, serve, vimark_command
from load.loadgen import Load, Result


@dataclass
class Run:
    quick: bool
    workers: int
    processes: int
    vehicles: int
    work: Path
    data: datasets.Dataset
    echo: dict[str, tuple[str, Result]] = field(default_factory=dict)  # method -> (kind, result)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    police: Served | None = None

    @property
    def warmup(self) -> float:
        return 0.5 if self.quick else 3.0

    @property
    def duration(self) -> float:
        return 1.5 if self.quick else 20.0

    def requests(self, name: str, items: list[bytes]) -> Path:
        path = self.work / f"{name}.pickle"
        if not path.exists():
            path.write_bytes(pickle.dumps(items))
        return path

    def load(self, target: str, method: str, requests: Path, **kw: Any) -> Result:
        kw.setdefault("duration", self.duration)
        kw.setdefault("warmup", self.warmup)
        kw.setdefault("processes", self.processes)
        return loadgen.run(Load(target, method, requests, **kw))

    def police_server(self) -> Served:
        """One police server per run, shared by the verify benchmarks (they only read)."""
        if self.police is None:
            db, keys = self.data.copy_to(self.work / "police")
            target = f"127.0.0.1:{free_port()}"
            command = vimark_command(f"sqlite:///{db}", keys, target, "police", self.workers)
            self.police = self.stack.enter_context(serve(command, target, self.work / "police.log"))
            check_verdicts(self.police.target, self.data)
        return self.police

    def echo_baseline(self, method: str, requests: Path, **kw: Any) -> tuple[str, Result]:
        """The faster of a sync and an asyncio echo server, same workers, same load."""
        key = method if not kw else f"{method}{sorted(kw.items())}"
        if key not in self.echo:
            best: tuple[str, Result] | None = None
            for kind in ("sync", "aio"):
                target = f"127.0.0.1:{free_port()}"
                with serve(echo_command(target, kind, self.workers), target, self.work / f"echo-{kind}.log"):
                    result = self.load(target, method, requests, **kw)
                print(f"  echo ({kind}) {method:<20} {result.rate:>10,.0f} calls/s  p99 {result.percentile(99):.2f} ms")
                if best is None or result.rate > best[1].rate:
                    best = (kind, result)
            assert best is not None
            self.echo[key] = best
        return self.echo[key]

    def verify_requests(self) -> Path:
        from vimark.v1 import mark_service_pb2 as pb

        return self.requests("verify", [pb.VerifyRequest(qr_text=t).SerializeToString() for t, _ in self.data.marks])


def check_verdicts(target: str, data: datasets.Dataset, sample: int = 200) -> None:
    """Before measuring: the server gives the verdicts the dataset expects (a sample of each)."""
    from vimark.client.sdk import VimarkClient
    from vimark.v1 import mark_service_pb2 as pb

    by_verdict: dict[str, list[str]] = {}
    for text, verdict in data.marks:
        if len(by_verdict.setdefault(verdict, [])) < sample // 5:
            by_verdict[verdict].append(text)
    with VimarkClient(target) as client:
        for expected, texts in by_verdict.items():
            got = Counter(
                pb.Verdict.Name(r.verdict).removeprefix("VERDICT_") for r in client.verify_batch(texts).results
            )
            if got != Counter({expected: len(texts)}):
                raise RuntimeError(f"dataset expects {expected} for {len(texts)} marks; the server says {dict(got)}")
