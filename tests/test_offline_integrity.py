"""Regression tests for the review of the offline terminal (issue 11): what a file edited on the
terminal, a leaked online key, a power cut, a damaged bundle or a bad anchor file cannot do, and
the serials a snapshot does not cover (below its range, or not yet committed when it was read)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import vector_loader
from test_offline_refusals import BODY, MADE, _bundle, _signer, _state, _terminal

from vimark.client.domain import status_bits
from vimark.client.offline import OfflineDataRefused, OfflineVerifier, StatusState, TerminalDirectory, TrustBundle
from vimark.client.offline.directory import ANCHOR_FILE, BUNDLE_FILE, STATUS_FILE
from vimark.client.offline.envelope import STATUS_DELTA, STATUS_SNAPSHOT, TRUST_BUNDLE
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import terminal_service_pb2 as tpb

V = pb.Verdict
GOOD = vector_loader.issue(BODY, sealed=False)  # serial 1234567, 闽C12345


def _after_a_delta(tmp_path: Path) -> TerminalDirectory:
    anchor, signer = _signer(tmp_path)
    held = _state(change_id=7)
    terminal = _terminal(tmp_path, anchor, signer, held)
    terminal.apply_delta(signer.sign(STATUS_DELTA, held.delta_to(_state(change_id=8)).SerializeToString(), MADE))
    return terminal


@pytest.mark.parametrize(
    "edit",
    [{"make_time": MADE + dt.timedelta(days=30)}, {"max_age_seconds": 300 * 86400}],
    ids=["made_later", "max_age_huge"],
)
def test_editing_the_held_states_times_is_refused(tmp_path: Path, edit: dict[str, object]) -> None:
    """Review 1: made_at and max_age of the state a delta made are covered by the signed digest."""
    terminal = _after_a_delta(tmp_path)
    held = tpb.HeldStatus.FromString((terminal.path / STATUS_FILE).read_bytes())
    state = tpb.StatusSnapshot.FromString(held.delta_applied.state)
    for name, value in edit.items():
        if name == "make_time":
            state.make_time.FromDatetime(value)  # type: ignore[arg-type]
        else:
            setattr(state, name, value)
    fake = dataclasses.replace(
        _state(change_id=8),
        made_at=state.make_time.ToDatetime(dt.UTC),
        max_age=dt.timedelta(seconds=state.max_age_seconds),
    )
    assert fake.digest() != _state(change_id=8).digest()
    held.delta_applied.state = fake.to_message().SerializeToString()
    StatusState.from_payload(held.delta_applied.state)  # self-consistent: only the signed delta refuses it
    (terminal.path / STATUS_FILE).write_bytes(held.SerializeToString())
    with pytest.raises(OfflineDataRefused, match="not the snapshot the last delta signed"):
        terminal.status()


def test_a_leaked_online_key_cannot_sign_data_that_never_goes_stale(tmp_path: Path) -> None:
    """Review 2: max_age is capped on the terminal, and nothing outlives its signer's certificate."""
    anchor, signer = _signer(tmp_path)  # its certificate ends 90 days after MADE
    forever = dt.timedelta(days=300)  # the most a terminal takes is 366 days: then capped
    terminal = TerminalDirectory(tmp_path / "t")
    terminal.provision(anchor.path / "anchor.pub")
    bundle = TrustBundle(vector_loader.trust_list(), MADE, forever).to_message().SerializeToString()
    terminal.store_bundle(signer.sign(TRUST_BUNDLE, bundle, MADE))
    state = dataclasses.replace(_state(), max_age=forever)
    terminal.store_snapshot(signer.sign(STATUS_SNAPSHOT, state.to_message().SerializeToString(), MADE))
    answer = OfflineVerifier.open(terminal.path, lambda: MADE + dt.timedelta(hours=25)).verify(GOOD)
    assert answer.verdict == V.VERDICT_UNSPECIFIED and answer.stale_since == MADE + dt.timedelta(hours=24)
    # Signed one hour before its key's certificate ends: stale when it ends, not 24 hours later.
    end = signer.info.end
    late = dataclasses.replace(_state(change_id=9), made_at=end - dt.timedelta(hours=1))
    terminal.store_snapshot(signer.sign(STATUS_SNAPSHOT, late.to_message().SerializeToString(), late.made_at))
    assert terminal.status().stale_since() == end
    assert terminal.bundle().stale_since() == MADE + dt.timedelta(hours=72)


def _covering(first: int, current: list[int], missing: frozenset[int] = frozenset()) -> StatusState:
    bits = np.zeros(20, np.bool_)
    bits[[s - first for s in current]] = True
    return StatusState.build(
        change_id=3,
        made_at=MADE,
        max_age=dt.timedelta(hours=24),
        first_serial=first,
        current=bits,
        revoked=frozenset(),
        unknown_vehicle=frozenset(),
        hotlist={},
        missing=missing,
    )


def _verifier(state: StatusState) -> OfflineVerifier:
    bundle = TrustBundle(vector_loader.trust_list(), MADE, dt.timedelta(hours=72))
    return OfflineVerifier(bundle, state, lambda: MADE + dt.timedelta(hours=1))


def test_a_serial_not_committed_when_the_store_was_read_is_not_superseded() -> None:
    """Review 3: a serial of the range with no mark row (PostgreSQL commits out of serial order)
    answers 'newer than the status data', and the missing list is signed (in the digest)."""
    state = _covering(BODY.serial - 5, [BODY.serial + 1], missing=frozenset({BODY.serial}))
    answer = _verifier(state).verify(GOOD)
    assert answer.verdict == V.VERDICT_UNSPECIFIED and answer.why == "offline.NEWER_THAN_STATUS"
    assert state.digest() != dataclasses.replace(state, missing=frozenset()).digest()
    again = StatusState.from_payload(state.to_message().SerializeToString())
    assert again.missing == {BODY.serial}
    # Without the gap, the same bits mean superseded, definitively.
    assert _verifier(dataclasses.replace(state, missing=frozenset())).verify(GOOD).verdict == V.VERDICT_SUPERSEDED
    # A delta carries the new list; a serial that committed since leaves it.
    later = _covering(BODY.serial - 5, [BODY.serial, BODY.serial + 1])
    assert state.apply(state.delta_to(later)).missing == frozenset()


def test_a_serial_below_the_snapshots_range_is_not_answered_superseded() -> None:
    """Review 4: below the range the server may say UNKNOWN_VEHICLE; offline says it cannot tell."""
    state = _covering(BODY.serial + 1, [BODY.serial + 2])
    answer = _verifier(state).verify(GOOD)
    assert answer.verdict == V.VERDICT_UNSPECIFIED and answer.why == "offline.OLDER_THAN_STATUS"
    assert "older than the offline status data" in answer.explain()
    # A stolen car still reads VEHICLE_BLOCKED whatever mark it shows, below the range too.
    blocked = dataclasses.replace(state, hotlist={"02:闽C12345": status_bits("C")})
    assert _verifier(blocked).verify(GOOD).verdict == V.VERDICT_VEHICLE_BLOCKED


def test_a_held_bundle_that_no_longer_checks_does_not_block_the_next(tmp_path: Path) -> None:
    """Review 5: a damaged held bundle is replaced by the next good one."""
    anchor, signer = _signer(tmp_path)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    (terminal.path / BUNDLE_FILE).write_bytes(b"damaged by a bad sector")
    assert terminal.held_bundle() is None
    terminal.store_bundle(signer.sign(TRUST_BUNDLE, _bundle(), MADE))
    assert terminal.bundle().made_at == MADE


def test_a_power_cut_while_a_delta_is_kept_leaves_the_terminal_verifying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 6: the status is one file replaced atomically (fsynced): a cut before the rename
    keeps the old status, and nothing else is written."""
    anchor, signer = _signer(tmp_path)
    held = _state(change_id=7)
    terminal = _terminal(tmp_path, anchor, signer, held)
    real_replace = os.replace
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])

    def power_cut(src: object, dst: object) -> None:
        raise SystemExit("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    delta = signer.sign(STATUS_DELTA, held.delta_to(_state(change_id=8)).SerializeToString(), MADE)
    with pytest.raises(SystemExit):
        terminal.apply_delta(delta)
    monkeypatch.setattr(os, "replace", real_replace)
    assert synced, "the new file reaches the disk before it replaces the old"
    assert OfflineVerifier.open(terminal.path, lambda: MADE).verify(GOOD).verdict == V.VERDICT_VALID
    assert terminal.status().change_id == 7
    assert sorted(p.name for p in terminal.path.iterdir() if not p.name.endswith(".tmp")) == sorted(
        [ANCHOR_FILE, BUNDLE_FILE, STATUS_FILE]
    )
    terminal.apply_delta(delta)
    assert terminal.status().change_id == 8


def test_kept_files_are_the_users_only(tmp_path: Path) -> None:
    anchor, signer = _signer(tmp_path)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    assert stat.S_IMODE(terminal.path.stat().st_mode) == 0o700
    for name in (ANCHOR_FILE, BUNDLE_FILE, STATUS_FILE):
        assert stat.S_IMODE((terminal.path / name).stat().st_mode) == 0o600, name


def test_an_unreadable_anchor_or_data_file_is_refused_naming_it(tmp_path: Path) -> None:
    """Review 8: no traceback for a non-UTF-8 anchor file or a directory where a file should be."""
    anchor, signer = _signer(tmp_path)
    terminal = _terminal(tmp_path, anchor, signer, _state())
    bad = tmp_path / "latin1.pub"
    bad.write_bytes(b"\xff\xfe caf\xe9\n")
    with pytest.raises(OfflineDataRefused, match=r"latin1\.pub is not UTF-8"):
        terminal.provision(bad)
    (terminal.path / BUNDLE_FILE).unlink()
    (terminal.path / BUNDLE_FILE).mkdir()
    with pytest.raises(OfflineDataRefused, match=f"cannot read .*{BUNDLE_FILE}"):
        OfflineVerifier.open(terminal.path)
    (terminal.path / ANCHOR_FILE).unlink()
    (terminal.path / ANCHOR_FILE).mkdir()
    with pytest.raises(OfflineDataRefused, match="cannot read the trust anchor file"):
        terminal.status()


def test_a_plate_typed_by_hand_is_checked_against_the_hotlist(tmp_path: Path) -> None:
    """The issue: a plate typed by hand is checked against the hotlist."""
    anchor, signer = _signer(tmp_path)
    hot = {"02:闽C12345": status_bits("C"), "52:闽CD12345": status_bits("J")}
    terminal = _terminal(tmp_path, anchor, signer, _state(hotlist=hot))
    verifier = OfflineVerifier.open(terminal.path, lambda: MADE + dt.timedelta(hours=1))
    stolen = verifier.lookup_plate("02", "闽C12345")
    assert (stolen.status_codes, stolen.blocked, stolen.stale_since) == ("C", True, None)
    flagged = verifier.lookup_plate("52", "闽CD12345")
    assert (flagged.status_codes, flagged.blocked, flagged.police_alert) == ("J", False, True)
    clear = verifier.lookup_plate("02", "闽C54321")
    assert not clear.on_hotlist and not clear.blocked
    late = OfflineVerifier.open(terminal.path, lambda: MADE + dt.timedelta(hours=30)).lookup_plate("02", "闽C54321")
    assert late.stale_since == MADE + dt.timedelta(hours=24)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"max_age_seconds": 2**62}, "maximum age"),
        ({"max_age_seconds": -1}, "maximum age"),
        ({"serial_count": 1 << 40}, "range is too large"),
    ],
)
def test_absurd_numbers_are_refused_before_use(edit: dict[str, int], message: str) -> None:
    """No overflow traceback and no huge allocation from a damaged or hostile snapshot."""
    m = _state().to_message()
    for name, value in edit.items():
        setattr(m, name, value)
    with pytest.raises(OfflineDataRefused, match=message):
        StatusState.from_payload(m.SerializeToString())
