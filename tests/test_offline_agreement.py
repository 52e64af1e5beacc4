"""A police terminal offline gives the verdict the server gives police online, on SQLite and
PostgreSQL, for every verdict class; and after a status change and a delta sync it follows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import vector_loader
from vector_loader import load_vector

from conftest import MovableClock, start_server, vehicle
from vimark.client.offline import OfflineVerifier
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.cli.main import main
from vimark.server.terminal_keys import AnchorDirectory, OnlineKeyDirectory
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

V = pb.Verdict


@dataclass
class Terminal:
    server: VimarkServer
    client: VimarkClient
    anchor: Path
    dir: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def sync(self, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
        assert main(["terminal", "sync", str(self.dir), "--server", self.target, *extra]) == 0
        return capsys.readouterr().out


@pytest.fixture
def terminal(db_url: str, keys_dir: Path, clock: MovableClock, tmp_path: Path) -> Iterator[Terminal]:
    anchor = AnchorDirectory(tmp_path / "anchor")
    anchor.init()
    OnlineKeyDirectory(tmp_path / "online", clock).rotate(anchor)
    server = start_server(
        db_url, keys_dir, clock, terminal_keys_dir=tmp_path / "online", terminal_refresh=dt.timedelta(0)
    )
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        yield Terminal(server, client, tmp_path / "anchor" / "anchor.pub", tmp_path / "terminal")
    server.stop(grace=1)


def _issue(client: VimarkClient, plate: str, request_id: str, reason: int = cpb.ISSUE_REASON_REGISTRATION) -> str:
    return client.issue(request_id=request_id, reason=reason, plate_number=plate, plate_type="02").qr_text


def _province(client: VimarkClient) -> dict[str, str]:
    """One mark (or text) per verdict class, made as the store would see them."""
    c = client
    vins = iter(f"LSVAB2BJ5KN{n:06d}" for n in range(1, 100))
    plates = {
        name: f"闽C{n:05d}" for n, name in enumerate(["valid", "super", "rev", "stolen", "alert", "moved", "sold"], 10)
    }
    c.upsert_vehicles([vehicle(plate_number=p, vin=next(vins), registered_on="2026-11-02") for p in plates.values()])
    # Goods vehicle whose validity ends this month: INSPECTION_EXPIRED once the clock moves on.
    c.upsert_vehicles(
        [
            vehicle(
                plate_number="闽C00099",
                vin=next(vins),
                category="goods",
                seats=0,
                registered_on="2025-11-10",
                valid_until="2026-11",
            )
        ]
    )
    texts = {name: _issue(c, plate, f"reg-{name}") for name, plate in plates.items()}
    texts["expired"] = _issue(c, "闽C00099", "redl-expired", cpb.ISSUE_REASON_REDOWNLOAD)
    texts["current_after_super"] = _issue(c, plates["super"], "transfer-super", cpb.ISSUE_REASON_TRANSFER)
    c.revoke_mark(c.verify(texts["rev"]).serial, "test")
    c.set_status(plate_number=plates["stolen"], plate_type="02", status_codes="C")
    c.set_status(plate_number=plates["alert"], plate_type="02", status_codes="J")
    # The same VIN under a new plate: the old mark names a plate nobody holds (UNKNOWN_VEHICLE).
    c.upsert_vehicles(
        [vehicle(plate_number="闽C00088", vin=c.lookup(plate_number=plates["moved"], plate_type="02").vin)]
    )
    # The plate given to another car (another VIN): SUPERSEDED.
    c.upsert_vehicles([vehicle(plate_number=plates["sold"], vin="LGWEF4A59MH000777", registered_on="2026-11-02")])
    texts["live"] = c.present(plate_number=plates["valid"], plate_type="02").live_qr_text
    texts["forged"] = texts["valid"][:-3] + ("000" if texts["valid"][-3:] != "000" else "111")
    texts["malformed"] = "VM1:not a mark"
    # Signed by a key id this server never had (a published TEST key), in the clear.
    texts["unknown_key"] = vector_loader.issue(
        load_vector("valid_clear_v1").body, key_id=99, signer="wrong", sealed=False
    )
    return texts


def _same(online: pb.VerifyResponse, offline: pb.VerifyResponse) -> None:
    assert pb.Verdict.Name(offline.verdict) == pb.Verdict.Name(online.verdict)
    for field in (
        "serial",
        "plate_number",
        "plate_type",
        "vin",
        "valid_until",
        "presentation",
        "key_id",
        "police_alert",
    ):
        assert getattr(offline, field) == getattr(online, field), field
    if offline.status_codes:  # a blocked or flagged vehicle: the letters as stored
        assert offline.status_codes == online.status_codes.replace("Q", "")


def test_offline_verdicts_agree_with_police_online(
    terminal: Terminal, clock: MovableClock, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = _province(terminal.client)
    clock.advance(days=7, minutes=4)  # 2026-12-02: the goods vehicle's mark has expired, the live QR too
    out = terminal.sync(capsys, "--anchor", str(terminal.anchor))
    assert "trust bundle" in out and "status snapshot" in out
    offline = OfflineVerifier.open(terminal.dir, clock)
    seen = set()
    # Every character of a valid mark changed, too: both sides refuse each the same way.
    valid = texts["valid"]
    altered = [valid[:i] + ("0" if valid[i] != "0" else "1") + valid[i + 1 :] for i in range(0, len(valid), 7)]
    for _name, text in [*texts.items(), *((f"altered-{i}", t) for i, t in enumerate(altered))]:
        online = terminal.client.verify(text)
        _same(online, offline.verify(text).response())
        seen.add(online.verdict)
    assert seen >= {
        V.VERDICT_VALID,
        V.VERDICT_INSPECTION_EXPIRED,
        V.VERDICT_SUPERSEDED,
        V.VERDICT_REVOKED,
        V.VERDICT_VEHICLE_BLOCKED,
        V.VERDICT_FORGED,
        V.VERDICT_MALFORMED,
        V.VERDICT_UNKNOWN_KEY,
        V.VERDICT_UNKNOWN_VEHICLE,
        V.VERDICT_PRESENTATION_EXPIRED,
    }
    alert = offline.verify(texts["alert"])
    assert alert.verdict == V.VERDICT_VALID and alert.police_alert and alert.status_codes == "J"


def test_after_a_status_change_and_a_delta_sync_offline_follows(
    terminal: Terminal, clock: MovableClock, capsys: pytest.CaptureFixture[str]
) -> None:
    c = terminal.client
    c.upsert_vehicles([vehicle(registered_on="2026-11-02")])
    text = _issue(c, "闽C12345", "reg-1")
    terminal.sync(capsys, "--anchor", str(terminal.anchor))
    assert OfflineVerifier.open(terminal.dir, clock).verify(text).verdict == V.VERDICT_VALID
    c.set_status(plate_number="闽C12345", plate_type="02", status_codes="C")
    clock.advance(minutes=1)
    out = terminal.sync(capsys)
    assert "status delta" in out and "snapshot" not in out
    stolen = OfflineVerifier.open(terminal.dir, clock).verify(text)
    assert stolen.verdict == V.VERDICT_VEHICLE_BLOCKED and stolen.status_codes == "C" and stolen.police_alert
    assert stolen.verdict == c.verify(text).verdict
    # A new mark after the snapshot: offline cannot confirm it, and never calls it VALID.
    c.set_status(plate_number="闽C12345", plate_type="02", status_codes="A")
    terminal.sync(capsys)
    newer = _issue(c, "闽C12345", "transfer-1", cpb.ISSUE_REASON_TRANSFER)
    answer = OfflineVerifier.open(terminal.dir, clock).verify(newer)
    assert answer.verdict == V.VERDICT_UNSPECIFIED and "newer than the offline status data" in answer.explain()
    terminal.sync(capsys)
    assert OfflineVerifier.open(terminal.dir, clock).verify(newer).verdict == V.VERDICT_VALID
    assert OfflineVerifier.open(terminal.dir, clock).verify(text).verdict == V.VERDICT_SUPERSEDED


def test_a_terminal_several_versions_behind_gets_one_composed_delta(
    terminal: Terminal, clock: MovableClock, capsys: pytest.CaptureFixture[str]
) -> None:
    c = terminal.client
    c.upsert_vehicles(
        [vehicle(plate_number=f"闽C1234{i}", vin=f"LSVAB2BJ5KN00000{i}", registered_on="2026-11-02") for i in (1, 2, 3)]
    )
    texts = [_issue(c, f"闽C1234{i}", f"reg-{i}") for i in range(1, 4)]
    terminal.sync(capsys, "--anchor", str(terminal.anchor))
    # Other terminals sync in between: the server builds (and keeps the diffs of) versions this one skips.
    c.set_status(plate_number="闽C12341", plate_type="02", status_codes="C")
    c.status_snapshot()
    c.revoke_mark(c.verify(texts[1]).serial, "test")
    c.status_snapshot()
    c.set_status(plate_number="闽C12341", plate_type="02", status_codes="A")
    c.set_status(plate_number="闽C12343", plate_type="02", status_codes="L")
    out = terminal.sync(capsys)
    assert "status delta" in out
    offline = OfflineVerifier.open(terminal.dir, clock)
    for text in texts:
        _same(c.verify(text), offline.verify(text).response())
    assert [offline.verify(t).verdict for t in texts] == [V.VERDICT_VALID, V.VERDICT_REVOKED, V.VERDICT_VALID]
    assert offline.verify(texts[2]).police_alert
