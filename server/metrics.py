"""Prometheus metrics, one registry per server (so tests can run several servers in a process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vimark.v1 import mark_service_pb2 as pb

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # labels() costs several microseconds (a lock and a dict of tuples); the hot path keeps its
        # labelled children here instead.
        self._children: dict[tuple[int, str, str | int], Any] = {}
        self.rpc_seconds = Histogram(
            "vimark_rpc_seconds",
            "RPC latency by method and status code",
            ["rpc", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.verdicts = Counter(
            "vimark_verdicts", "Verdicts given, by RPC and verdict", ["rpc", "verdict"], registry=self.registry
        )
        self.batch_size = Histogram(
            "vimark_verify_batch_size",
            "Items per VerifyBatch call",
            buckets=(1, 4, 16, 64, 256, 1000),
            registry=self.registry,
        )
        self.index_vehicles = Gauge("vimark_index_vehicles", "Vehicles in the validity index", registry=self.registry)
        self.index_bytes = Gauge("vimark_index_bytes", "Bytes held by the validity index", registry=self.registry)
        self.index_change_id = Gauge(
            "vimark_index_change_id", "Last change-log id applied to the index", registry=self.registry
        )
        self.index_sync_age = Gauge(
            "vimark_index_sync_age_seconds",
            "Seconds since the index last caught up with the change log",
            registry=self.registry,
        )
        self.index_checksum = Gauge(
            "vimark_index_checksum",
            "Checksum of the validity index's contents (equal on every replica that holds the same data)",
            registry=self.registry,
        )
        self.audit_backlog = Gauge(
            "vimark_audit_backlog", "Audit events accepted but not yet written to the database", registry=self.registry
        )
        self.audit_written = Counter(
            "vimark_audit_written", "Audit events written to the database", registry=self.registry
        )
        self.audit_dropped = Counter(
            "vimark_audit_dropped",
            "Audit events lost because the backlog was full while the database was down",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "vimark_rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED by the per-caller rate limit, by role",
            ["role"],
            registry=self.registry,
        )
        self.signature_batch_size = Histogram(
            "vimark_signature_batch_size",
            "Signatures checked together by the verification engine",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000),
            registry=self.registry,
        )

    def rpc_finished(self, rpc: str, code: str, seconds: float) -> None:
        self._child(self.rpc_seconds, rpc, code).observe(seconds)

    def verdict_given(self, rpc: str, verdict: int) -> None:
        key = (id(self.verdicts), rpc, verdict)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.verdicts.labels(rpc, pb.Verdict.Name(verdict))  # type: ignore[arg-type]
        child.inc()

    def _child(self, metric: Any, first: str, second: str) -> Any:
        key = (id(metric), first, second)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(first, second)
        return child
