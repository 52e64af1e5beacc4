"""The Prometheus endpoint (`serve_metrics`): vimark's series on /metrics only, no `_created` series."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest

from vimark.server.metrics import Metrics, MetricsServer, serve_metrics
from vimark.v1 import mark_service_pb2 as pb


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer, int]]:
    metrics = Metrics()
    metrics.rpc_finished("Verify", "OK", 0.003)
    metrics.rpc_finished("Verify", "INVALID_ARGUMENT", 0.0004)
    metrics.verdict_given("Verify", pb.VERDICT_VALID)
    metrics.rate_limited.labels("public").inc()
    metrics.batch_size.observe(50)
    metrics.signature_batch_size.observe(8)
    metrics.audit_written.inc(3)
    metrics.index_vehicles.set(1000)
    server, port = serve_metrics("127.0.0.1", 0, metrics.registry)
    try:
        yield metrics, server, port
    finally:
        server.stop()


def test_metrics_are_served_with_vimarks_series(served: tuple[Metrics, MetricsServer, int]) -> None:
    _, _, port = served
    assert port > 0
    status, content_type, body = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    lines = body.splitlines()
    for expected in (
        'vimark_rpc_seconds_count{code="OK",rpc="Verify"} 1.0',
        'vimark_rpc_seconds_count{code="INVALID_ARGUMENT",rpc="Verify"} 1.0',
        'vimark_verdicts_total{rpc="Verify",verdict="VERDICT_VALID"} 1.0',
        'vimark_rate_limited_total{role="public"} 1.0',
        "vimark_audit_written_total 3.0",
        "vimark_index_vehicles 1000.0",
        "vimark_verify_batch_size_count 1.0",
        "vimark_signature_batch_size_count 1.0",
    ):
        assert expected in lines, expected
    assert "# TYPE vimark_rpc_seconds histogram" in lines
    # a query string does not change the path
    assert get(port, "/metrics?name[]=vimark_index_vehicles")[0] == 200


def test_no_created_series(served: tuple[Metrics, MetricsServer, int]) -> None:
    _, _, port = served
    body = get(port, "/metrics")[2]
    assert "vimark_rpc_seconds_bucket" in body
    assert [line for line in body.splitlines() if "_created" in line] == []


def test_every_other_path_is_404(served: tuple[Metrics, MetricsServer, int]) -> None:
    _, _, port = served
    for path in ("/", "/other", "/metrics/", "/metricsx", "/favicon.ico", "/../metrics"):
        status, _, body = get(port, path)
        assert status == 404, path
        assert "vimark_" not in body, path
    assert get(port, "/metrics", method="HEAD")[0] == 200
    assert get(port, "/other", method="HEAD")[0] == 404


def test_a_scrape_sees_values_recorded_after_start(served: tuple[Metrics, MetricsServer, int]) -> None:
    metrics, _, port = served
    metrics.audit_dropped.inc(7)
    metrics.audit_backlog.set(12)
    body = get(port, "/metrics")[2].splitlines()
    assert "vimark_audit_dropped_total 7.0" in body
    assert "vimark_audit_backlog 12.0" in body


def test_name_filter_collects_only_the_series_asked_for() -> None:
    """`?name[]=` as in prometheus_client's server: a scrape that leaves out the index checksum
    (which reads the whole index) does not compute it."""
    metrics = Metrics()
    computed: list[int] = []

    def checksum() -> float:
        computed.append(1)
        return 42.0

    metrics.index_checksum.set_function(checksum)
    metrics.index_vehicles.set(5)
    metrics.rpc_finished("Verify", "OK", 0.001)
    server, port = serve_metrics("127.0.0.1", 0, metrics.registry)
    try:
        status, _, body = get(port, "/metrics?name[]=vimark_index_vehicles&name[]=vimark_rpc_seconds_count")
        assert status == 200
        samples = sorted(line.split("{")[0].split(" ")[0] for line in body.splitlines() if not line.startswith("#"))
        assert samples == ["vimark_index_vehicles", "vimark_rpc_seconds_count"]
        assert computed == []
        assert "vimark_index_checksum 42.0" in get(port, "/metrics")[2].splitlines()
        assert computed == [1]
    finally:
        server.stop()


def test_a_failing_gauge_is_a_500_and_the_endpoint_keeps_serving() -> None:
    metrics = Metrics()
    broken = [True]

    def checksum() -> float:
        if broken[0]:
            raise RuntimeError("index gone")
        return 1.0

    metrics.index_checksum.set_function(checksum)
    server, port = serve_metrics("127.0.0.1", 0, metrics.registry)
    try:
        assert get(port, "/metrics")[0] == 500
        broken[0] = False
        assert get(port, "/metrics")[0] == 200
    finally:
        server.stop()


def test_a_taken_port_raises_oserror() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(OSError):
            serve_metrics("127.0.0.1", taken, Metrics().registry)


def test_stop_closes_the_port() -> None:
    server, port = serve_metrics("127.0.0.1", 0, Metrics().registry)
    assert get(port, "/metrics")[0] == 200
    server.stop()
    server.stop()  # twice is harmless
    with pytest.raises(OSError):
        get(port, "/metrics")
    again, _ = serve_metrics("127.0.0.1", port, Metrics().registry)  # the port is free again at once
    again.stop()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        server, port = serve_metrics("[::1]", 0, Metrics().registry)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        connection = http.client.HTTPConnection("::1", port, timeout=5)
        connection.request("GET", "/metrics")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        server.stop()
