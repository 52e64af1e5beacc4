"""What a police terminal refuses, and says: data not signed through its trust anchor, altered
data, data of the wrong kind, stale data (FORGED stays FORGED, nothing is VALID), and deltas
that do not apply. Real Ed25519 keys made here; the marks are signed with the published TEST keys."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import vector_loader

from vimark.client.offline import (
    DeltaDoesNotApply,
    OfflineDataRefused,
    OfflineVerifier,
    StatusState,
    TerminalDirectory,
    TrustBundle,
)
from vimark.client.offline.directory import STATUS_FILE
from vimark.client.offline.envelope import STATUS_DELTA, STATUS_SNAPSHOT, TRUST_BUNDLE
from vimark.server.terminal_keys import AnchorDirectory, OnlineKeyDirectory, OnlineSigner
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import terminal_service_pb2 as tpb

V = pb.Verdict
MADE = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
BODY = vector_loader.load_vector("valid_clear_v1").body  # serial 1234567, 闽C12345, valid through 2027-06


def _signer(tmp_path: Path, name: str = "anchor") -> tuple[AnchorDirectory, OnlineSigner]:
    anchor = AnchorDirectory(tmp_path / name)
    anchor.init()
    online = OnlineKeyDirectory(tmp_path / f"online-{name}", lambda: MADE)
    online.rotate(anchor)
    return anchor, online.load()


def _state(change_id: int = 7, current: bool = True, hotlist: dict[str, int] | None = None) -> StatusState:
    bits = np.zeros(10, np.bool_)
    bits[0] = current
    return StatusState.build(
        change_id=change_id,
        made_at=MADE,
        max_age=dt.timedelta(hours=24),
        first_serial=BODY.serial,
        current=bits,
        revoked=frozenset({BODY.serial + 5}),
        unknown_vehicle=frozenset(),
        hotlist=hotlist or {},
    )


def _bundle() -> bytes:
    return TrustBundle(vector_loader.trust_list(), MADE, dt.timedelta(hours=72)).to_message().SerializeToString()


def _terminal(tmp_path: Path, anchor: AnchorDirectory, signer: OnlineSigner, state: StatusState) -> TerminalDirectory:
    terminal = TerminalDirectory(tmp_path / "terminal")
    terminal.provision(anchor.path / "anchor.pub")
    terminal.store_bundle(signer.sign(TRUST_BUNDLE, _bundle(), MADE))
    terminal.store_snapshot(signer.sign(STATUS_SNAPSHOT, state.to_message().SerializeToString(), MADE))
    return terminal


def test_data_not_signed_through_the_terminals_anchor_is_refused(tmp_path: Path) -> None:
    anchor, _ = _signer(tmp_path)
    _, stranger = _signer(tmp_path, "stranger")  # a well-formed chain, under another anchor
    terminal = TerminalDirectory(tmp_path / "terminal")
    terminal.provision(anchor.path / "anchor.pub")
    with pytest.raises(OfflineDataRefused, match="not signed through the trust anchor"):
        terminal.store_bundle(stranger.sign(TRUST_BUNDLE, _bundle(), MADE))
    assert not (terminal.path / "trust-bundle.signed").exists()


def test_an_altered_bundle_or_one_of_another_kind_is_refused(tmp_path: Path) -> None:
    anchor, signer = _signer(tmp_path)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    envelope = tpb.SignedEnvelope.FromString(signer.sign(TRUST_BUNDLE, _bundle(), MADE))
    payload = bytearray(envelope.payload)
    payload[-1] ^= 1  # one bit of one seal key
    envelope.payload = bytes(payload)
    with pytest.raises(OfflineDataRefused, match="altered"):
        terminal.store_bundle(envelope.SerializeToString())
    snapshot = signer.sign(STATUS_SNAPSHOT, _state().to_message().SerializeToString(), MADE)
    with pytest.raises(OfflineDataRefused, match="not a trust-bundle"):
        terminal.store_bundle(snapshot)
    # A file changed on the terminal itself is refused when it is read.
    path = terminal.path / "trust-bundle.signed"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(OfflineDataRefused):
        OfflineVerifier.open(terminal.path, lambda: MADE)


def test_data_made_outside_the_online_keys_certificate_is_refused(tmp_path: Path) -> None:
    anchor, signer = _signer(tmp_path)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    late = MADE + dt.timedelta(days=200)  # the certificate lasts 90 days
    payload = TrustBundle(vector_loader.trust_list(), late, dt.timedelta(hours=72)).to_message().SerializeToString()
    forged_time = dataclasses.replace(
        signer, info=dataclasses.replace(signer.info, end=late)
    )  # a signer ignoring its end
    with pytest.raises(OfflineDataRefused, match="outside its online key"):
        terminal.store_bundle(forged_time.sign(TRUST_BUNDLE, payload, late))


@pytest.mark.parametrize(
    ("after", "stale_since"),
    [(dt.timedelta(hours=25), MADE + dt.timedelta(hours=24)), (dt.timedelta(hours=73), MADE + dt.timedelta(hours=24))],
)
def test_stale_data_never_answers_valid_but_forged_stays_forged(
    tmp_path: Path, after: dt.timedelta, stale_since: dt.datetime
) -> None:
    anchor, signer = _signer(tmp_path)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    good = vector_loader.issue(BODY, sealed=False)
    fresh = OfflineVerifier.open(terminal.path, lambda: MADE + dt.timedelta(hours=1))
    assert fresh.verify(good).verdict == V.VERDICT_VALID and fresh.verify(good).stale_since is None
    stale = OfflineVerifier.open(terminal.path, lambda: MADE + after)
    answer = stale.verify(good)
    assert answer.verdict == V.VERDICT_UNSPECIFIED and answer.stale_since == stale_since
    assert "stale since 2026-11-26 10:00 CST" in answer.explain()
    forged = good[:-2] + ("00" if good[-2:] != "00" else "11")
    assert stale.verify(forged).verdict in (V.VERDICT_FORGED, V.VERDICT_MALFORMED)
    assert stale.verify(vector_loader.load_vector("bitflip_signature").qr_text).verdict == V.VERDICT_FORGED


def test_a_stale_bundle_alone_is_stale_too(tmp_path: Path) -> None:
    anchor, signer = _signer(tmp_path)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    # Status refreshed four days later, the bundle not: past the bundle's 72 hours.
    later = MADE + dt.timedelta(days=4)
    fresh = dataclasses.replace(_state(), made_at=later)
    terminal.store_snapshot(signer.sign(STATUS_SNAPSHOT, fresh.to_message().SerializeToString(), later))
    answer = OfflineVerifier.open(terminal.path, lambda: later).verify(vector_loader.issue(BODY, sealed=False))
    assert answer.verdict == V.VERDICT_UNSPECIFIED and answer.stale_since == MADE + dt.timedelta(hours=72)


def test_a_delta_that_does_not_apply_is_refused_and_the_held_data_kept(tmp_path: Path) -> None:
    anchor, signer = _signer(tmp_path)
    held = _state(change_id=7)
    terminal = _terminal(tmp_path, anchor, signer, held)
    stolen = _state(change_id=9, hotlist={"02:闽C12345": 1 << 2})  # C
    # Made for another version than the one held.
    other = _state(change_id=8).delta_to(stolen)
    with pytest.raises(DeltaDoesNotApply, match="download the full snapshot"):
        terminal.apply_delta(signer.sign(STATUS_DELTA, other.SerializeToString(), MADE))
    # For the held version, but its result is not the snapshot it names (a server bug, or tampering
    # before signing): refused too.
    wrong = held.delta_to(stolen)
    wrong.to_digest = bytes(32)
    with pytest.raises(DeltaDoesNotApply, match="not the one signed"):
        terminal.apply_delta(signer.sign(STATUS_DELTA, wrong.SerializeToString(), MADE))
    assert terminal.status() == held
    # The right one applies, and the car reads VEHICLE_BLOCKED.
    terminal.apply_delta(signer.sign(STATUS_DELTA, held.delta_to(stolen).SerializeToString(), MADE))
    answer = OfflineVerifier.open(terminal.path, lambda: MADE).verify(vector_loader.issue(BODY, sealed=False))
    assert answer.verdict == V.VERDICT_VEHICLE_BLOCKED and answer.status_codes == "C"
    # A status file changed on the terminal no longer matches the signed delta.
    kept = tpb.HeldStatus.FromString((terminal.path / STATUS_FILE).read_bytes())
    kept.delta_applied.state = held.to_message().SerializeToString()
    (terminal.path / STATUS_FILE).write_bytes(kept.SerializeToString())
    with pytest.raises(OfflineDataRefused, match="not the snapshot the last delta signed"):
        terminal.status()
    assert terminal.held_status() is None  # so the next sync downloads in full


def test_a_snapshot_is_exact_for_every_serial_it_covers() -> None:
    rng = np.random.default_rng(11)
    current = rng.random(5000) < 2 / 3
    state = StatusState.build(
        change_id=1,
        made_at=MADE,
        max_age=dt.timedelta(hours=24),
        first_serial=1000,
        current=current,
        revoked=frozenset(),
        unknown_vehicle=frozenset(),
        hotlist={},
    )
    again = StatusState.from_payload(state.to_message().SerializeToString())
    assert [again.is_current(1000 + i) for i in range(5000)] == current.tolist()
    assert not again.is_current(999) and not again.is_current(6000)
    flipped = current.copy()
    flipped[rng.choice(5000, 300, replace=False)] ^= True
    newer = StatusState.build(
        change_id=2,
        made_at=MADE,
        max_age=dt.timedelta(hours=24),
        first_serial=1100,  # the range moved up as old validity months ended
        current=np.concatenate([flipped[100:], np.ones(50, np.bool_)]),
        revoked=frozenset({1500}),
        unknown_vehicle=frozenset({1200}),
        hotlist={"02:闽C12345": 4},
    )
    applied = again.apply(again.delta_to(newer))
    assert applied.digest() == newer.digest() and applied.current_bits == newer.current_bits


def test_older_signed_data_than_the_terminal_holds_is_refused(tmp_path: Path) -> None:
    """A replayed old snapshot would hide a car reported stolen since."""
    anchor, signer = _signer(tmp_path)
    later = MADE + dt.timedelta(hours=2)
    newer = dataclasses.replace(_state(change_id=9, hotlist={"02:闽C12345": 1 << 2}), made_at=later)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    terminal.store_snapshot(signer.sign(STATUS_SNAPSHOT, newer.to_message().SerializeToString(), later))
    old = signer.sign(STATUS_SNAPSHOT, _state().to_message().SerializeToString(), MADE)
    with pytest.raises(OfflineDataRefused, match="before the one held"):
        terminal.store_snapshot(old)
    assert terminal.status().change_id == 9
