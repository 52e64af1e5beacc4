"""The README walkthrough over real TLS, through the real `vimark` command line: a development PKI
from `vimark pki`, `vimark serve --tls-cert --tls-key --client-ca`, then every caller with its own
certificate (operator imports, issuer issues and presents, police see everything, the public app
only VALID/NOT_VALID, a partner a narrower view), a revoked terminal refused at its next call, and
the audit log of the police and partner queries."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cli_walkthrough import VIMARK

from ports import free_port
from vimark.client.sdk import tls_credentials

PLATE = ["--plate-number", "闽C12345", "--plate-type", "02"]
# The README's callers: `vimark pki issue pki --role ROLE --id ID` writes pki/ROLE-ID.pem and .key.
CALLERS = [
    ("operator", "ops-1"),
    ("registration", "vao-1"),
    ("owner_service", "owner-app"),
    ("police", "TX-0001"),
    ("partner", "insurer-3"),
    ("public", "app-7"),
]
OPERATOR, REGISTRATION, OWNER_SERVICE, POLICE, PARTNER, PUBLIC = (
    f"{role}-{caller_id}" for role, caller_id in CALLERS
)
TLS_ENV = ("VIMARK_CA", "VIMARK_CERT", "VIMARK_KEY")


def vimark(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`vimark ARGS` in `workdir`, without any TLS environment of the test's own."""
    clean = {k: v for k, v in os.environ.items() if k not in TLS_ENV}
    return subprocess.run(
        [*VIMARK, *args], cwd=workdir, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60
    )


class TlsServed:
    """A `vimark serve` over TLS in `workdir`, laid out as the README's: pki/, vimark.db, vimark-keys/."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self.process, self.workdir = process, workdir
        self.address = f"127.0.0.1:{port}"

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return vimark(self.workdir, *args, env=env)

    def as_role(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The README's `as_role NAME ARGS`: vimark with VIMARK_CA/CERT/KEY set to pki/ca.pem, pki/NAME.pem/.key."""
        env = {"VIMARK_CA": "pki/ca.pem", "VIMARK_CERT": f"pki/{name}.pem", "VIMARK_KEY": f"pki/{name}.key"}
        return self.run(*args, "--server", self.address, env=env)

    def ok(self, name: str, *args: str) -> str:
        result = self.as_role(name, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def json(self, name: str, *args: str) -> dict[str, object]:
        return answer(self.as_role(name, *args, "--json"))


def health_over_tls(address: str, workdir: Path) -> int:
    """gRPC health over TLS, presenting the operator's certificate."""
    pki = workdir / "pki"
    credentials = tls_credentials(pki / "ca.pem", pki / f"{OPERATOR}.pem", pki / f"{OPERATOR}.key")
    with grpc.secure_channel(address, credentials) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status)


def together(*steps: Callable[[], subprocess.CompletedProcess[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run steps that do not depend on each other side by side (each a `vimark` process); results in order."""
    with ThreadPoolExecutor(len(steps)) as pool:
        return [future.result() for future in [pool.submit(step) for step in steps]]


def answer(result: subprocess.CompletedProcess[str], exit_code: int = 0) -> dict[str, object]:
    """The JSON object a `vimark ... --json` printed, once its exit status is as expected."""
    assert result.returncode == exit_code, result.stdout + result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServed]:
    workdir = tmp_path_factory.mktemp("tls-walkthrough")
    port = free_port()
    assert vimark(workdir, "pki", "init", "pki").returncode == 0
    for result in together(
        *(partial(vimark, workdir, "pki", "issue", "pki", "--role", r, "--id", i) for r, i in CALLERS)
    ):
        assert result.returncode == 0, result.stderr
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            *VIMARK,
            "serve",
            "--demo",
            "100",
            "--tls-cert",
            "pki/server.pem",
            "--tls-key",
            "pki/server.key",
            "--client-ca",
            "pki/ca.pem",
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-port",
            "0",
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    served = TlsServed(process, port, workdir)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if health_over_tls(served.address, workdir) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert process.poll() is None, (workdir / "serve.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "vimark serve --demo 100 over TLS did not become SERVING"
            time.sleep(0.2)
        yield served
    finally:
        process.kill()
        process.wait()
        log.close()


def test_the_server_says_it_serves_tls_not_development_mode(served: TlsServed) -> None:
    text = (served.workdir / "serve.log").read_text(errors="replace")
    assert "TLS, client certificates required" in text
    assert "DEVELOPMENT MODE" not in text


def test_walkthrough_over_tls_with_role_certificates(served: TlsServed) -> None:
    """The README's steps in its order; steps that do not depend on each other run side by side."""
    # The operator feeds the registry.
    (served.workdir / "vehicles.csv").write_text(
        "plate_number,plate_type,vin,category,registered_on,valid_until,status\n"
        "闽C12345,02,LSVAB2BJ5KN000001,small_passenger,2026-06-15,,\n",
        encoding="utf-8",
    )
    assert served.ok(OPERATOR, "vehicles", "import", "vehicles.csv").startswith("imported 1 vehicles")

    # Registration issues the first mark.
    issued = served.json(REGISTRATION, "issue", *PLATE, "--reason", "registration", "--request-id", "reg-1")
    qr_text, serial, month = str(issued["qr_text"]), issued["serial"], str(issued["valid_until"])
    assert isinstance(serial, int) and serial > 0
    assert (issued["plate_number"], issued["plate_type"]) == ("闽C12345", "02")

    # The owner's copies that need no server: PNG and SVG (the PDF: test_pdf_copy_over_tls).
    copies = ("mark.png", "mark.svg")
    for out, result in zip(
        copies, together(*(partial(served.run, "render", qr_text, "--out", o) for o in copies)), strict=True
    ):
        assert result.returncode == 0 and (served.workdir / out).stat().st_size > 0, result.stderr

    scan = ("verify", "--image", "mark.png")
    police, police_json, public, public_json, partner_json, refused = together(
        partial(served.as_role, POLICE, *scan),
        partial(served.as_role, POLICE, *scan, "--json"),
        partial(served.as_role, PUBLIC, *scan),
        partial(served.as_role, PUBLIC, *scan, "--json"),
        partial(served.as_role, PARTNER, "lookup", *PLATE, "--json"),
        partial(served.as_role, PUBLIC, "lookup", *PLATE),
    )
    full, seen, looked = answer(police_json), answer(public_json), answer(partner_json)
    # A police terminal scans the picture: the full view.
    assert police.returncode == 0, police.stderr
    assert police.stdout.splitlines() == [
        f"VALID: valid until the end of {month}",
        f"  闽C12345 (02)  valid until {month}  mark {serial}",
        "  presented OFFLINE",
        "  status A 正常 normal",
    ]
    assert full["vin"] == "LSVAB2BJ5KN000001" and full["current_serial"] == serial and full["within_validity"]
    assert full["status_codes"] == "A"

    # The same picture in the public app: VALID or NOT_VALID, the plate and the month, nothing else.
    assert public.returncode == 0, public.stderr
    assert public.stdout.splitlines() == ["VALID: valid", f"  闽C12345 (02)  valid until {month}"]
    assert (seen["verdict"], seen["plate_number"], seen["plate_type"], seen["valid_until"]) == (
        "VERDICT_VALID",
        "闽C12345",
        "02",
        month,
    )
    assert "issue_time" not in seen
    for absent in ("serial", "vin", "within_validity", "status_codes", "key_id", "current_serial", "police_alert"):
        assert not seen[absent], absent
    assert (seen["presentation"], seen["reason"]) == ("PRESENTATION_UNSPECIFIED", "ISSUE_REASON_UNSPECIFIED")

    # A partner looks the plate up: validity, month, current mark; no VIN, no status letters.
    # The public app may not look plates up at all.
    assert (looked["within_validity"], looked["valid_until"], looked["current_serial"]) == (True, month, serial)
    for absent in ("vin", "status_codes", "police_alert", "overdue_cycles", "scrapping_due"):
        assert not looked[absent], absent
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("vimark: LookupVehicleStatus is for partner, police; this caller is public")
    assert refused.stderr.rstrip().endswith("[PERMISSION_DENIED]")

    # Reported stolen: police see VEHICLE_BLOCKED with the reason, the public only NOT_VALID.
    assert "status now C" in served.ok(OPERATOR, "vehicles", "set-status", *PLATE, "--status", "C")
    blocked, not_valid = together(partial(served.as_role, POLICE, *scan), partial(served.as_role, PUBLIC, *scan))
    assert blocked.returncode == 1 and blocked.stdout.startswith("VEHICLE_BLOCKED"), blocked.stdout + blocked.stderr
    assert "  status C 被盗抢 stolen or robbed" in blocked.stdout and "  POLICE ALERT" in blocked.stdout
    assert not_valid.returncode == 1, not_valid.stderr
    assert not_valid.stdout.splitlines() == ["NOT_VALID: not valid", f"  闽C12345 (02)  valid until {month}"]

    # Recovered; the issuer hands out the live QR, with download and print copies. Then the mark is
    # judged on another date: the README's 2027-01-01 is the first day after the month issued today
    # (2026-12); computed here so that the test does not depend on the day it runs.
    assert "status now A" in served.ok(OPERATOR, "vehicles", "set-status", *PLATE, "--status", "A")
    year, mon = (int(part) for part in month.split("-"))
    after = dt.date(year + mon // 12, mon % 12 + 1, 1).isoformat()
    present, expired = together(
        partial(served.as_role, OWNER_SERVICE, "present", *PLATE),
        partial(served.as_role, POLICE, "verify", qr_text, "--at", after),
    )
    assert present.returncode == 0, present.stderr
    shown = present.stdout.splitlines()
    assert shown[0].startswith("live QR (void after ") and shown[2:5] == ["download copy:", qr_text, "print copy:"]
    assert shown[1].startswith("VM1:") and shown[5].startswith("VM1:") and len({shown[1], qr_text, shown[5]}) == 3
    assert expired.returncode == 1 and expired.stdout.startswith("INSPECTION_EXPIRED"), expired.stdout + expired.stderr

    # The terminal is lost: revoke its certificate; its next call is refused, with no restart, and
    # other callers are still served.
    revoked = served.run("pki", "revoke", "pki", "--role", "police", "--id", "TX-0001")
    assert revoked.returncode == 0 and revoked.stdout.startswith("revoked police/TX-0001"), revoked.stderr
    cut_off, partner = together(partial(served.as_role, POLICE, *scan), partial(served.as_role, PARTNER, *scan))
    assert cut_off.returncode == 2 and cut_off.stdout == "", cut_off.stdout
    assert cut_off.stderr.count("\n") == 1 and "Traceback" not in cut_off.stderr, cut_off.stderr
    assert cut_off.stderr.startswith("vimark: client certificate ")
    assert cut_off.stderr.rstrip().endswith("(police/TX-0001) has been revoked [UNAUTHENTICATED]")
    assert partner.returncode == 0 and partner.stdout.startswith("VALID") and served.process.poll() is None

    # The audit log: every police and partner query; not the public's, not the refused ones.
    deadline = time.monotonic() + 10  # the server writes the audit log in batches every 0.2 s
    while True:
        audit = served.as_role(OPERATOR, "audit", "--json")
        assert audit.returncode == 0, audit.stderr
        events = [json.loads(line) for line in audit.stdout.splitlines()]
        if len(events) >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    seen_in_order = [(e["caller_id"], e["role"], e["rpc"], e["verdict"]) for e in events]
    assert seen_in_order[0] == ("vao-1", "registration", "Issue", "ISSUED")  # issuers are audited too
    # The two police scans and the partner's lookup ran side by side: only their set is fixed.
    assert sorted(seen_in_order[1:4]) == [
        ("TX-0001", "police", "Verify", "VERDICT_VALID"),  # the scan, as text
        ("TX-0001", "police", "Verify", "VERDICT_VALID"),  # the scan, as JSON
        ("insurer-3", "partner", "LookupVehicleStatus", "FOUND"),
    ]
    assert seen_in_order[4] == ("TX-0001", "police", "Verify", "VERDICT_VEHICLE_BLOCKED")
    assert sorted(seen_in_order[5:7]) == [  # side by side too
        ("TX-0001", "police", "Verify", "VERDICT_INSPECTION_EXPIRED"),
        ("owner-app", "owner_service", "Present", "PRESENTED"),
    ]
    assert seen_in_order[7:] == [("insurer-3", "partner", "Verify", "VERDICT_VALID")]  # after the revocation
    assert {(e["plate_number"], e["plate_type"], e["serial"]) for e in events} == {("闽C12345", "02", serial)}
    assert all(dt.datetime.fromisoformat(e["at"]).tzinfo is not None for e in events)
    # Only an operator reads it: the police terminal that was audited may not.
    refused = served.as_role(PARTNER, "audit", "--json")
    assert refused.returncode == 2 and "[PERMISSION_DENIED]" in refused.stderr, refused.stderr


def test_pdf_copy_over_tls(served: TlsServed) -> None:
    """The README's `as_role owner_service-owner-app render "$QR" --out mark.pdf`."""
    shown = served.json(OWNER_SERVICE, "present", "--plate-number", "京A00000", "--plate-type", "02")
    result = served.as_role(OWNER_SERVICE, "render", str(shown["download_qr_text"]), "--out", "demo.pdf")
    assert result.returncode == 0, result.stderr
    assert (served.workdir / "demo.pdf").read_bytes().startswith(b"%PDF")
