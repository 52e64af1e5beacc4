"""The README walkthrough through the real `vimark` command against a `vimark serve --demo` process:
import -> issue -> render -> verify the image -> change status -> verify again; plus health,
reflection, metrics and a SIGTERM that drains."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pypdfium2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ports import free_port
from vimark.client.qrimage import decode_pil

VIMARK = [sys.executable, "-m", "vimark.server.cli.main"]


class Served:
    def __init__(self, process: subprocess.Popen[str], port: int, metrics_port: int, workdir: Path) -> None:
        self.process, self.port, self.metrics_port, self.workdir = process, port, metrics_port, workdir
        self.address = f"127.0.0.1:{port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*VIMARK, *args, "--server", self.address], cwd=self.workdir, capture_output=True, text=True, timeout=60
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def cli_json(self, *args: str) -> dict[str, object]:
        result = self.cli(*args, "--json", check=False)
        assert result.returncode in (0, 1), result.stderr
        data: dict[str, object] = json.loads(result.stdout)
        return data


def health_status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("serve")
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [*VIMARK, "serve", "--demo", "1000", "--listen", f"127.0.0.1:{port}", "--metrics-port", str(metrics_port)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if health_status(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "vimark serve --demo 1000 did not become SERVING"
        time.sleep(0.2)
    yield Served(process, port, metrics_port, workdir)
    if process.poll() is None:
        process.kill()
        process.wait()


def test_demo_server_is_serving_with_defaults_under_the_working_directory(served: Served) -> None:
    assert (served.workdir / "vimark.db").exists()
    assert (served.workdir / "vimark-keys" / "keys.json").exists()
    status = served.cli_json("lookup", "--plate-number", "京A00000", "--plate-type", "02")
    assert {"within_validity", "valid_until", "status_codes"} <= status.keys()


def test_walkthrough_import_issue_render_verify_status(served: Served) -> None:
    csv_file = served.workdir / "vehicles.csv"
    csv_file.write_text(
        "plate_number,plate_type,vin,category,registered_on,valid_until,status\n"
        "闽C12345,02,LSVAB2BJ5KN000001,small_passenger,2026-06-15,,\n"
        "粤BD12345,52,LSVAB2BJ5KN000002,small_passenger,2020-06-15,2026-12,A\n",
        encoding="utf-8",
    )
    assert served.cli("vehicles", "import", str(csv_file)).stdout.startswith("imported 2 vehicles")
    issued = served.cli_json(
        "issue",
        "--plate-number",
        "闽C12345",
        "--plate-type",
        "02",
        "--reason",
        "registration",
        "--request-id",
        "walk-1",
    )
    assert issued["valid_until"] == "2028-06" and isinstance(issued["serial"], int)
    qr_text = str(issued["qr_text"])

    png = served.workdir / "mark.png"
    served.cli("render", qr_text, "--out", str(png))
    verified = served.cli_json("verify", "--image", str(png))
    assert verified["verdict"] == "VERDICT_VALID"
    assert (verified["plate_number"], verified["plate_type"], verified["valid_until"]) == ("闽C12345", "02", "2028-06")

    pdf = served.workdir / "mark.pdf"
    served.cli("render", qr_text, "--out", str(pdf))
    page = pypdfium2.PdfDocument(str(pdf))[0]
    assert "闽C12345" in page.get_textpage().get_text_range()
    raster = served.workdir / "page.png"
    page.render(scale=200 / 72).to_pil().save(raster)
    assert decode_pil(page.render(scale=200 / 72).to_pil()) == qr_text
    assert served.cli_json("verify", "--image", str(raster))["verdict"] == "VERDICT_VALID"
    assert served.cli_json("verify", "--image", str(pdf))["verdict"] == "VERDICT_VALID"

    served.cli("vehicles", "set-status", "--plate-number", "闽C12345", "--plate-type", "02", "--status", "C")
    blocked = served.cli("verify", qr_text, check=False)
    assert blocked.returncode == 1 and blocked.stdout.startswith("VEHICLE_BLOCKED")
    assert served.cli_json("lookup", "--plate-number", "闽C12345", "--plate-type", "02")["status_codes"] == "C"
    served.cli("vehicles", "set-status", "--plate-number", "闽C12345", "--plate-type", "02", "--status", "A")

    shown = served.cli_json("present", "--plate-number", "闽C12345", "--plate-type", "02")
    for copy in ("live_qr_text", "download_qr_text", "print_qr_text"):
        assert served.cli_json("verify", str(shown[copy]))["verdict"] == "VERDICT_VALID"
    assert served.cli_json("verify", qr_text, "--at", "2028-07-01")["verdict"] == "VERDICT_INSPECTION_EXPIRED"


def test_cli_errors_are_one_clear_line(served: Served) -> None:
    bad = served.cli(
        "issue",
        "--plate-number",
        "闽C12345",
        "--plate-type",
        "98",
        "--reason",
        "registration",
        "--request-id",
        "x",
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("vimark: --plate-type: unknown plate type code '98'")
    assert "Traceback" not in bad.stderr
    csv_file = served.workdir / "broken.csv"
    csv_file.write_text(
        "plate_number,plate_type,vin,category,registered_on,valid_until,status\n"
        "闽C22222,02,LSVAB2BJ5KN000009,small_passenger,2024-02-30,,\n",
        encoding="utf-8",
    )
    broken = served.cli("vehicles", "import", str(csv_file), check=False)
    assert broken.returncode == 2 and "line 2" in broken.stderr and "registered_on" in broken.stderr
    unreachable = subprocess.run(
        [
            *VIMARK,
            "lookup",
            "--plate-number",
            "闽C12345",
            "--plate-type",
            "02",
            "--server",
            f"127.0.0.1:{free_port()}",
            "--timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 2 and "unavailable" in unreachable.stderr


def test_reflection_lists_the_services(served: Served) -> None:
    with grpc.insecure_channel(served.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"vimark.v1.MarkService", "vimark.v1.RegistryService", "grpc.health.v1.Health"} <= names


def test_metrics_are_scraped(served: Served) -> None:
    served.cli("lookup", "--plate-number", "京A00000", "--plate-type", "02")
    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'vimark_rpc_seconds_count{code="OK",rpc="LookupVehicleStatus"}' in text
    vehicles = re.search(r"^vimark_index_vehicles (\S+)$", text, re.MULTILINE)
    assert vehicles is not None and 1000 <= float(vehicles[1]) <= 1002  # the demo's 1000, plus the walkthrough's


def test_sigterm_drains_then_exits(served: Served) -> None:
    """Last in this module: it stops the server. Calls in flight at SIGTERM finish OK; the first call
    that arrives once draining has begun is refused, and nothing OK comes after it."""
    codes: list[grpc.StatusCode] = []
    qr = str(served.cli_json("present", "--plate-number", "京A00000", "--plate-type", "02")["download_qr_text"])

    def stream() -> None:
        from vimark.v1 import mark_service_pb2 as pb
        from vimark.v1 import mark_service_pb2_grpc as pb_grpc

        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.MarkServiceStub(channel)
            for _ in range(400):
                try:
                    stub.VerifyBatch(pb.VerifyBatchRequest(qr_texts=[qr] * 1000), timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())  # type: ignore[attr-defined]
                    return

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(0.5)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    worker.join(timeout=30)
    *answered, refused = codes
    assert answered and set(answered) == {grpc.StatusCode.OK}, codes
    # A call racing the server's close is refused by gRPC core itself: UNAVAILABLE when the client
    # saw the GOAWAY first, CANCELLED when the call reached the server as it shut its queue. Either
    # way it was never processed; a call cut off mid-way by an expired grace period cannot be here,
    # since every earlier call finished OK and each takes well under the 10 s grace.
    assert refused in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, codes
