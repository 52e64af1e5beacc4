"""The terminal's command line: `vimark terminal sync`, then with the server stopped `terminal lookup`,
`vimark verify --offline DIR` (text and --image) and `--fallback-offline DIR`, which says that the
server did not answer and gives the verdict the server gave."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conftest import MovableClock, start_server, vehicle
from vimark.client.sdk import VimarkClient
from vimark.server.cli.main import main
from vimark.server.terminal_keys import AnchorDirectory, OnlineKeyDirectory
from vimark.v1 import certificate_pb2 as cpb


def test_sync_then_verify_offline_with_the_server_gone(
    sqlite_url: str, keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The CLI's offline verifier reads the real clock: make the data now.
    clock = MovableClock(dt.datetime.now(dt.UTC))
    anchor = AnchorDirectory(tmp_path / "anchor")
    anchor.init()
    OnlineKeyDirectory(tmp_path / "online", clock).rotate(anchor)
    server = start_server(sqlite_url, keys_dir, clock, terminal_keys_dir=tmp_path / "online")
    target = f"127.0.0.1:{server.port}"
    try:
        with VimarkClient(target) as client:
            registered = f"{clock().year}-{clock().month:02d}-01"
            client.upsert_vehicles([vehicle(registered_on=registered)])
            stolen = vehicle(plate_number="闽C54321", vin="LSVAB2BJ5KN000002", registered_on=registered)
            client.upsert_vehicles([stolen])
            client.set_status(plate_number="闽C54321", plate_type="02", status_codes="C")
            text = client.issue(
                request_id="reg-1", reason=cpb.ISSUE_REASON_REGISTRATION, plate_number="闽C12345", plate_type="02"
            ).qr_text
            online = client.verify(text)
        terminal = tmp_path / "terminal"
        assert (
            main(["terminal", "sync", str(terminal), "--anchor", str(anchor.path / "anchor.pub"), "--server", target])
            == 0
        )
        out = capsys.readouterr().out
        assert "trust bundle: 1 issuing keys" in out and "status snapshot: version" in out
    finally:
        server.stop(grace=1)
    assert main(["render", text, "--out", str(tmp_path / "mark.png")]) == 0
    capsys.readouterr()
    for how in ([text], ["--image", str(tmp_path / "mark.png")]):
        assert main(["verify", "--offline", str(terminal), *how]) == 0
        out = capsys.readouterr().out
        assert out.startswith("OFFLINE\nVALID:") and "闽C12345 (02)" in out and "not known offline" in out
    code = main(["verify", "--fallback-offline", str(terminal), text, "--server", target, "--timeout", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "OFFLINE (the server did not answer within" in out and "VALID" in out
    assert online.verdict == 1  # VALID online too
    assert main(["verify", "--offline", str(terminal), text, "--json"]) == 0
    assert '"verdict": "VERDICT_VALID"' in capsys.readouterr().out
    # A plate typed by hand, checked against the hotlist with the server gone.
    lookup = ["terminal", "lookup", str(terminal), "--plate-type", "02", "--plate-number"]
    assert main([*lookup, "闽C54321"]) == 1
    assert "闽C54321: VEHICLE BLOCKED (status C" in capsys.readouterr().out
    assert main([*lookup, "闽C12345"]) == 0
    assert "闽C12345: not on the hotlist" in capsys.readouterr().out
