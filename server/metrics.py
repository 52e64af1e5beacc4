"""Prometheus metrics, one registry per server (so tests can run several servers in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
