"""The offline-data test vectors (tests/vectors/offline/offline_v1.json, docs/offline-format.md):
what a terminal provisioned with the TEST anchor accepts, decodes, refuses and answers."""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import vector_loader

from vimark.client.domain import status_bits
from vimark.client.offline import OfflineDataRefused, OfflineVerifier, TerminalDirectory
from vimark.client.offline.directory import ANCHOR_FILE, BUNDLE_FILE, open_bundle, open_delta, open_snapshot
from vimark.v1 import mark_service_pb2 as pb

VECTOR = Path(__file__).resolve().parent / "vectors" / "offline" / "offline_v1.json"


@cache
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR.read_text(encoding="utf-8"))
    return data


def anchors() -> tuple[bytes, ...]:
    return (bytes.fromhex(vector()["test_anchor_public_hex"]),)


def test_the_snapshot_vector_decodes_as_documented() -> None:
    v = vector()
    state = open_snapshot(bytes.fromhex(v["signed_snapshot_hex"]), anchors())
    s = v["snapshot"]
    assert (state.change_id, state.first_serial, state.serial_count) == (s["change_id"], s["first_serial"], 16)
    covered = range(state.first_serial, state.first_serial + state.serial_count)
    assert [n for n in covered if state.is_current(n)] == s["current_serials"]
    assert sorted(state.revoked) == s["revoked_serials"]
    assert sorted(state.unknown_vehicle) == s["unknown_vehicle_serials"]
    assert sorted(state.missing) == s["missing_serials"]
    assert dict(state.hotlist) == {k: status_bits(letters) for k, letters in s["hotlist"].items()}
    assert state.digest().hex() == s["content_digest_hex"]
    delta, _ = open_delta(bytes.fromhex(v["signed_delta_hex"]), anchors())
    assert state.apply(delta).digest().hex() == v["after_delta"]["content_digest_hex"]
    bundle = open_bundle(bytes.fromhex(v["signed_bundle_hex"]), anchors())
    assert bundle.trust.keys.keys() == vector_loader.trust_list().keys.keys()
    assert bundle.made_at.isoformat() == v["made_time"] and bundle.max_age == dt.timedelta(hours=72)


@pytest.mark.parametrize(
    ("name", "opener", "message"),
    [
        ("bundle_under_another_anchor", open_bundle, "not signed through the trust anchor"),
        ("altered_bundle", open_bundle, "has been altered"),
        ("snapshot_offered_as_bundle", open_bundle, "is not a trust-bundle"),
    ],
)
def test_refused_vectors(name: str, opener: Any, message: str) -> None:
    with pytest.raises(OfflineDataRefused, match=message):
        opener(bytes.fromhex(vector()["refused"][name]), anchors())


@pytest.mark.parametrize("case", vector()["verdicts"], ids=lambda c: f"{c['qr_vector']}-{c['with']}-{c['verdict']}")
def test_verdict_vectors(case: dict[str, Any], tmp_path: Path) -> None:
    v = vector()
    terminal = TerminalDirectory(tmp_path)
    (tmp_path / ANCHOR_FILE).write_text(v["test_anchor_public_hex"] + "\n")
    (tmp_path / BUNDLE_FILE).write_bytes(bytes.fromhex(v["signed_bundle_hex"]))
    terminal.store_snapshot(bytes.fromhex(v["signed_snapshot_hex"]))
    if case["with"] == "delta":
        terminal.apply_delta(bytes.fromhex(v["signed_delta_hex"]))
    now = dt.datetime.fromisoformat(v["made_time"]) + dt.timedelta(hours=case["hours_after_made"])
    answer = OfflineVerifier.open(tmp_path, lambda: now).verify(vector_loader.load_vector(case["qr_vector"]).qr_text)
    assert pb.Verdict.Name(answer.verdict) == "VERDICT_" + case["verdict"]  # type: ignore[arg-type]


def test_the_format_document_quotes_the_vectors() -> None:
    """docs/offline-format.md section 8 names the vectors' anchor key and content digests."""
    doc = (VECTOR.parents[3] / "docs" / "offline-format.md").read_text(encoding="utf-8")
    v = vector()
    for quoted in (
        v["test_anchor_public_hex"],
        v["snapshot"]["content_digest_hex"],
        v["after_delta"]["content_digest_hex"],
    ):
        assert quoted in doc
