"""A new user's first hour: every mistake they can fix is one line on stderr naming the path,
address or flag and what to do (exit status 2), and nothing is created on the way."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from ports import free_port
from vimark.server.app import VimarkServer

VIMARK = [sys.executable, "-m", "vimark.server.cli.main"]


def vimark(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIMARK, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line; a failure here shows everything that was printed."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vimark: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_busy_port_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = one_line(vimark(tmp_path, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-port", "0"))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--listen" in line
    assert list(tmp_path.iterdir()) == []  # no key directory, no database


def test_paths_that_cannot_be_used_are_named(tmp_path: Path) -> None:
    port = f"127.0.0.1:{free_port()}"
    (tmp_path / "a-file").write_text("not a directory")
    line = one_line(vimark(tmp_path, "serve", "--listen", port, "--keys", "a-file/keys", "--metrics-port", "0"))
    assert "a-file" in line and "--keys" in line
    (tmp_path / "notes.db").write_text("this is not a database")
    line = one_line(vimark(tmp_path, "serve", "--listen", port, "--db", "sqlite:///notes.db"))
    assert "notes.db is not a SQLite database" in line
    line = one_line(vimark(tmp_path, "serve", "--listen", port, "--db", "sqlite:///no/such/dir/v.db"))
    assert "no/such/dir" in line
    line = one_line(vimark(tmp_path, "serve", "--listen", port, "--db", "mysql+nodriver://x"))
    assert "--db" in line and "not a database URL" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "notes.db"]  # nothing created


def test_a_database_server_that_does_not_answer_is_waited_for_and_its_password_not_shown(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://vimark:s3cret-pw@127.0.0.1:{free_port()}/vimark"
    port = free_port()
    process = subprocess.Popen(
        [*VIMARK, "serve", "--db", url, "--listen", f"127.0.0.1:{port}", "--metrics-port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(6)  # several retries
        health = vimark(tmp_path, "health", "--server", f"127.0.0.1:{port}", "--timeout", "5")
        assert health.returncode == 1 and "NOT_SERVING" in health.stdout, health.stdout + health.stderr
        assert process.poll() is None  # still running: the database may come back
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    said = [line for line in err.splitlines() if "does not answer" in line]
    assert len(said) == 1, err  # once a minute, not once a try
    assert "***" in said[0] and "s3cret-pw" not in err


def test_cli_errors_name_the_flags_typed(tmp_path: Path) -> None:
    line = one_line(vimark(tmp_path, "lookup", "--server", "127.0.0.1:1"))
    assert "--plate-number" in line and "--vin" in line and "plate_number" not in line
    line = one_line(vimark(tmp_path, "lookup", "--plate-number", "闽C12345", "--server", "127.0.0.1:1"))
    assert line.startswith("vimark: --plate-type: required")
    picture = tmp_path / "photo.jpg"
    picture.write_bytes(b"\xff\xd8 not really a jpeg")
    line = one_line(vimark(tmp_path, "verify", str(picture), "--server", "127.0.0.1:1"))
    assert f"--image {picture}" in line


def test_health_and_connection_hints(tmp_path: Path, pki_dir: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*VIMARK, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-port", "0", "--demo", "5"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            health = vimark(tmp_path, "health", "--server", f"127.0.0.1:{port}")
            if health.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert health.returncode == 0 and health.stdout.strip() == f"127.0.0.1:{port}: SERVING", health.stderr
        # A TLS client against this plaintext server: one line, with what to do.
        me = pki_dir / "police-TX-0001"
        tls = ["--ca", str(pki_dir / "ca.pem"), "--cert", f"{me}.pem", "--key", f"{me}.key", "--timeout", "3"]
        line = one_line(vimark(tmp_path, "health", "--server", f"127.0.0.1:{port}", *tls))
        assert "development server without TLS: leave out --ca, --cert and --key" in line, line
    finally:
        process.terminate()
        process.wait(timeout=30)
    refused = one_line(
        vimark(tmp_path, "lookup", "--plate-number", "闽C12345", "--plate-type", "02", "--server", f"127.0.0.1:{port}")
    )
    assert "is a vimark server running" in refused and "vimark health" in refused


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: a read-only directory needs another user")
def test_a_read_only_working_directory_is_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        line = one_line(vimark(tmp_path, "serve", "--listen", f"127.0.0.1:{free_port()}", "--metrics-port", "0"))
        assert str(tmp_path) in line
    finally:
        tmp_path.chmod(0o755)


def test_a_plaintext_client_against_a_tls_server_is_told_to_use_tls(tmp_path: Path, tls_server: VimarkServer) -> None:
    plate = ["--plate-number", "闽C12345", "--plate-type", "02", "--timeout", "3"]
    line = one_line(vimark(tmp_path, "lookup", *plate, "--server", f"127.0.0.1:{tls_server.port}"))
    assert "the server may require TLS: give --ca, --cert and --key" in line, line


def test_reflection_answers_as_v1_and_v1alpha(server: VimarkServer) -> None:
    """grpcurl and current tools ask grpc.reflection.v1 first; older ones v1alpha."""
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            info = channel.stream_stream(
                f"/{package}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            answers = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
            names = {s.name for s in answers[0].list_services_response.service}
            assert {"vimark.v1.MarkService", "vimark.v1.AuditService", "grpc.reflection.v1.ServerReflection"} <= names


def test_metrics_listen_where_asked_and_only_on_metrics(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    process = subprocess.Popen(
        [*VIMARK, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while vimark(tmp_path, "health", "--server", f"127.0.0.1:{port}").returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as page:
            text = page.read().decode()
        assert "vimark_index_vehicles" in text and "_created" not in text
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics}/", timeout=10)
        assert missing.value.code == 404
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_svg_given_to_image_says_how_to_get_a_picture(tmp_path: Path) -> None:
    from vimark.client.render import render_svg

    drawing = tmp_path / "mark.svg"
    render_svg("VM1:ABC", drawing, scale=4)
    line = one_line(vimark(tmp_path, "verify", "--image", str(drawing), "--server", "127.0.0.1:1"))
    assert "SVG" in line and "--out mark.png" in line


def test_tls_files_and_a_non_loopback_address_are_checked_before_anything_is_created(
    tmp_path: Path, pki_dir: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    tls = ["--tls-cert", str(pki_dir / "server.pem"), "--client-ca", str(pki_dir / "ca.pem")]
    line = one_line(vimark(tmp_path, "serve", "--listen", listen, *tls, "--tls-key", str(pki_dir / "ca.pem")))
    assert "--tls-key" in line and "not an unencrypted PEM private key" in line
    wrong_key = ["--tls-key", str(pki_dir / "police-TX-0001.key")]
    assert "is not the key of --tls-cert" in one_line(vimark(tmp_path, "serve", "--listen", listen, *tls, *wrong_key))
    (pki_dir / "crl.pem").unlink()
    right_key = ["--tls-key", str(pki_dir / "server.key")]
    assert "no CRL at" in one_line(vimark(tmp_path, "serve", "--listen", listen, *tls, *right_key))
    assert "loopback" in one_line(vimark(tmp_path, "serve", "--listen", f"0.0.0.0:{free_port()}"))
    assert [p.name for p in tmp_path.iterdir()] == ["pki"]  # the test's own PKI: no key directory, no database
