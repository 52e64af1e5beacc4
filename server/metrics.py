"""Prometheus metrics, one registry per server (so tests can run several servers in a process),
and the HTTP endpoint that serves them (`serve_metrics`)."""

from __future__ import annotations

import copy
import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from vimark.v1 import mark_service_pb2 as pb

log = logging.getLogger("vimark.server")

# What generate_latest writes (legacy names, no UTF-8 escaping): the classic text format, which every
# Prometheus reads. prometheus_client's CONTENT_TYPE_LATEST says 1.0.0 in newer releases.
_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
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
        self.gc_pause_seconds = Histogram(
            "vimark_gc_pause_seconds",
            "Garbage-collection pauses (every Python thread stopped), by generation",
            ["generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
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


class _WithoutCreated:
    """A view of a registry without the `*_created` samples prometheus_client adds to counters and
    histograms (one extra series per labelled child, which nobody graphs). Scoped to this
    registry, unlike `prometheus_client.disable_created_metrics()`, which changes the process."""

    def __init__(self, source: Any) -> None:  # a CollectorRegistry, or its restricted_registry()
        self._source = source

    def collect(self) -> Iterable[Metric]:
        for metric in self._source.collect():
            created = metric.name + "_created"
            if any(sample.name == created for sample in metric.samples):
                metric = copy.copy(metric)
                metric.samples = [sample for sample in metric.samples if sample.name != created]
            yield metric


class MetricsServer(ThreadingHTTPServer):
    """Serves one registry as Prometheus text on /metrics, and 404 on every other path.

    As prometheus_client's own server, `/metrics?name[]=A&name[]=B` collects only those series
    (sample names, e.g. `vimark_rpc_seconds_bucket`): the others are not even computed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry) -> None:
        self.registry = registry
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _MetricsHandler)
        self._thread: threading.Thread | None = None

    def server_bind(self) -> None:
        # HTTPServer's own server_bind looks the host's name up (getfqdn), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.1,), name="vimark-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the socket; safe to call twice."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()


class _MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = 10  # seconds a scraper may take to send its request: a stalled one frees its thread

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        url = urlsplit(self.path)
        if url.path != "/metrics":
            payload, status, content_type = b"404 not found: metrics are at /metrics\n", 404, "text/plain"
        else:
            names = parse_qs(url.query).get("name[]")
            source = self.server.registry.restricted_registry(names) if names else self.server.registry
            try:
                payload, status, content_type = generate_latest(_WithoutCreated(source)), 200, _TEXT_FORMAT
            except Exception:  # a gauge's function failed: say so, and keep serving the next scrape
                log.exception("metrics: collecting the registry failed")
                payload, status, content_type = b"500 collecting the metrics failed (see the log)\n", 500, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # every scrape would be a stderr line
        log.debug("metrics %s: " + format, self.address_string(), *args)


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> tuple[MetricsServer, int]:
    """Serve `registry` on http://HOST:PORT/metrics from a daemon thread; returns the server (stop it
    with `.stop()`) and the port it bound (useful with port 0). A port that is taken, or an address
    this machine does not have, raises OSError."""
    server = MetricsServer((host.strip("[]"), port), registry)
    server.start()
    return server, server.port
