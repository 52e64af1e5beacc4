"""The compiled Verify path (server/_hotpath.c) against the Python path, which is the specification.

The compiled path may only answer VALID (with exactly the Python path's fields and reply),
FORGED for a failing signature, or AUTHENTIC (its signature checked, the rest for the Python path),
and must otherwise hand the mark back (None). These tests check
that on the published vectors, on every kind of vehicle state that is not plainly VALID, and on
random mutations of real marks; and that it does answer (is not silently always None).
Run with VIMARK_PURE_PYTHON=1 they check that the switch turns it off.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vector_loader import load_vectors, seal_key, signing_seed, trust_list

from vimark.client import certificate as cert
from vimark.client.base45 import ALPHABET
from vimark.client.domain import STATUS_CODES, STORED_STATUS_LETTERS, VehicleCategory, china_date, month_of, status_bits
from vimark.client.messages import LANGUAGES
from vimark.client.trust import TrustList
from vimark.server import hotpath, index_keys
from vimark.server.batcher import SignatureEngine
from vimark.server.hotpath import AUTHENTIC, FORGED_SIGNATURE, ValidMark
from vimark.server.index import ValidityIndex
from vimark.server.policy import View
from vimark.server.records import Change, VehicleRecord
from vimark.server.verifier import Verdict, Verifier
from vimark.server.views import valid_response, verify_response

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
TODAY = china_date(NOW)
EXPIRED = int(NOW.timestamp()) - 1  # a live QR's minutes, over
COMPILED = hotpath.native is not None
OFF = f"the compiled path is off ({hotpath.DISABLE_VARIABLE} set, or not built)"
needs_compiled = pytest.mark.skipif(not COMPILED, reason=OFF)
TRUST = trust_list()  # the TEST trust list: signing key 1, seal key 1


class _Fixed:
    def __init__(self, trust: TrustList) -> None:
        self.trust = trust

    def current(self) -> TrustList:
        return self.trust


def _vehicle(i: int, **changes: Any) -> VehicleRecord:
    v = VehicleRecord(
        vehicle_id=i,
        plate_type="02",
        plate_number=f"闽C{i:05d}",
        vin=f"LSVAM4187C{i:07d}",
        category=VehicleCategory.SMALL_PASSENGER,
        registered_on=dt.date(2020, 3, 1),
        seats=5,
        exemption_lost=False,
        status_bits=0,
        valid_until=month_of(TODAY) + 6,
        current_serial=1000 + i,
    )
    return dataclasses.replace(v, **changes)


def _signed(body_bytes: bytes, sealed: bool = True) -> str:
    signature = Ed25519PrivateKey.from_private_bytes(signing_seed("test")).sign(cert.signed_message(1, body_bytes))
    return cert.encode(body_bytes, 1, signature, seal_key() if sealed else None)


def _mark(v: VehicleRecord, sealed: bool = True, **changes: Any) -> str:
    body = cert.CertificateBody(
        serial=v.current_serial,
        plate_number=v.plate_number,
        plate_type=v.plate_type,
        vin=v.vin,
        valid_until=v.valid_until or month_of(TODAY),
        issued_at=int(NOW.timestamp()) - 86400,
        reason=cert.IssueReason.ISSUE_REASON_INSPECTION_PASSED,
        presentation=cert.Presentation.PRESENTATION_OFFLINE,
    )
    return _signed(dataclasses.replace(body, **changes).to_bytes(), sealed)


def _body_bytes(v: VehicleRecord) -> bytes:
    return cert.decode(_mark(v), TRUST.seal_keys).body_bytes


ALERT_ONLY = next(c for c in STORED_STATUS_LETTERS if STATUS_CODES[c].police_alert and not STATUS_CODES[c].blocks_road)
# Vehicles in every state a mark can meet; their marks, and marks that are not their vehicle's current one.
VEHICLES = [
    _vehicle(1),
    _vehicle(2, status_bits=status_bits("E")),  # blocks the road (scrapped)
    _vehicle(3, status_bits=status_bits(ALERT_ONLY)),  # flagged for the police, still on the road
    _vehicle(4, valid_until=month_of(TODAY) - 1),  # overdue
    _vehicle(5, valid_until=None),  # imported without a validity
    _vehicle(6, plate_type="01"),
]
VALID_TEXTS = [_mark(VEHICLES[0]), _mark(VEHICLES[0], sealed=False), _mark(VEHICLES[2]), _mark(VEHICLES[5])]
OTHER_TEXTS = [
    _mark(VEHICLES[1]),  # blocked
    _mark(VEHICLES[3]),  # expired
    _mark(VEHICLES[4]),  # no recorded validity
    _mark(VEHICLES[0], serial=999),  # superseded
    _mark(VEHICLES[0], vin="LSVAM4187C9999999"),  # another VIN on this plate
    _mark(VEHICLES[0], plate_number="闽C99999"),  # no such vehicle
    _mark(VEHICLES[0], valid_from_day=(TODAY - dt.date(1970, 1, 1)).days + 2),  # not yet valid
    _mark(VEHICLES[0], valid_until=month_of(TODAY) - 1),  # the mark's own validity over
    _mark(VEHICLES[0], presentation=cert.Presentation.PRESENTATION_ONLINE, presentation_expires_at=EXPIRED),
    _mark(VEHICLES[5], plate_type="02"),  # plate type 02 of vehicle 6's number: nobody's
]


def _index(revoked: tuple[int, ...] = ()) -> ValidityIndex:
    index = ValidityIndex()
    index.load(1, VEHICLES, revoked)
    return index


def _verifier(index: ValidityIndex | None = None, **kw: Any) -> Verifier:
    return Verifier(index or _index(), _Fixed(TRUST), lambda: NOW, **kw)


def _agrees(verifier: Verifier, text: str, trust: TrustList = TRUST, now: dt.datetime = NOW) -> object:
    """The compiled answer for `text`, after checking it against the Python path's."""
    assert verifier.hot is not None
    found = verifier.hot.check(text, trust, now, china_date(now))
    python = verifier.verify(text)
    if isinstance(found, ValidMark):
        assert python.verdict == Verdict.VERDICT_VALID, python.explanation
        body, standing = python.body, python.standing
        assert body is not None and standing is not None
        assert (found.serial, found.plate_number, f"{found.plate_type:02d}", found.vin) == (
            body.serial, body.plate_number, body.plate_type, body.vin)  # fmt: skip
        assert (found.valid_until, found.presentation, found.issued_at, found.reason, found.key_id) == (
            body.valid_until, body.presentation, body.issued_at, body.reason, python.key_id)  # fmt: skip
        assert (found.status_bits, found.current_valid_until) == (standing.vehicle.status_bits, standing.valid_until)
        for view in View:
            for language in LANGUAGES:
                assert valid_response(found, view, language) == verify_response(python, view, language)
    elif found is FORGED_SIGNATURE:
        assert python.verdict == Verdict.VERDICT_FORGED and python.facts["detail"] == "the signature does not verify"
    elif found is AUTHENTIC:  # steps 1-8 passed here: the Python path refuses the mark at none of them
        refused = python.verdict in (Verdict.VERDICT_MALFORMED, Verdict.VERDICT_UNKNOWN_KEY, Verdict.VERDICT_FORGED)
        assert not refused or str(python.facts["detail"]).startswith("stamped after key")  # step 9
        assert verifier.check(text) == python
    else:
        assert found is None, found
    return found


def test_built_where_a_compiler_is() -> None:
    """The test command's first run must exercise the compiled path: a silent fallback would hide it."""
    disabled = os.environ.get(hotpath.DISABLE_VARIABLE, "") not in ("", "0")
    if disabled:
        assert hotpath.native is None and _verifier().hot is None
    elif shutil.which("cc") or shutil.which("gcc"):
        assert COMPILED, "a C compiler is here but vimark.server._hotpath did not build (pip install -e .)"


def test_the_switch_turns_it_off() -> None:
    code = "from vimark.server import hotpath; print(hotpath.native is None)"
    env = {**os.environ, hotpath.DISABLE_VARIABLE: "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    assert _verifier(compiled=False).hot is None


@needs_compiled
def test_valid_marks_are_answered_with_the_python_fields_and_reply() -> None:
    verifier = _verifier()
    for text in VALID_TEXTS:
        assert isinstance(_agrees(verifier, text), ValidMark), text
        assert verifier.check(text).verdict == Verdict.VERDICT_VALID


@needs_compiled
def test_every_other_state_goes_to_the_python_path() -> None:
    verifier = _verifier(_index(revoked=(1001,)))
    for text in [*OTHER_TEXTS, VALID_TEXTS[0]]:  # mark 1001 revoked now
        assert _agrees(verifier, text) is AUTHENTIC  # their signatures are good
        assert verifier.check(text) == verifier.verify(text)


@needs_compiled
def test_the_published_vectors() -> None:
    """Each vector judged on its issue day, with its vehicle in the index: the authentic ones VALID
    through the compiled path, the rest handed back or FORGED, as the Python path says."""
    answered = 0
    for vector in load_vectors():
        trust = trust_list(vector.trust_list)
        try:
            body = cert.decode(vector.qr_text, trust.seal_keys).body
        except cert.CertificateError:
            body = None
        now = body.issued_time if body is not None else NOW
        index = ValidityIndex()
        if body is not None:
            vehicle = _vehicle(1, plate_type=body.plate_type, plate_number=body.plate_number, vin=body.vin,
                               valid_until=body.valid_until, current_serial=body.serial)  # fmt: skip
            index.load(1, [vehicle], [])
        verifier = Verifier(index, _Fixed(trust), lambda now=now: now)  # type: ignore[misc]
        found = _agrees(verifier, vector.qr_text, trust, now)
        python = verifier.verify(vector.qr_text)
        if python.verdict == Verdict.VERDICT_VALID:
            assert isinstance(found, ValidMark), vector.name
            answered += 1
    assert answered >= 5


@needs_compiled
def test_a_failing_signature_is_forged() -> None:
    verifier = _verifier()
    text = VALID_TEXTS[1]  # clear: flip a bit of the signature
    envelope = bytearray(cert.b45decode(text[4:]))
    envelope[10] ^= 1
    forged = cert.PREFIX + cert.b45encode(bytes(envelope))
    assert _agrees(verifier, forged) is FORGED_SIGNATURE
    assert verifier.check(forged) == verifier.verify(forged)


@needs_compiled
def test_a_signed_body_in_a_form_upb_refuses_is_not_valid() -> None:
    """A string's length in more than 5 bytes: upb refuses the body (MALFORMED), so must this path."""
    body = _body_bytes(VEHICLES[0])
    length = body[body.index(b"\x12") + 1]  # field 2, the plate number
    overlong = body.replace(b"\x12" + bytes([length]), b"\x12" + bytes([0x80 | length, 0x80, 0x80, 0x80, 0x80, 0]), 1)
    for text in (_signed(overlong), _signed(overlong, sealed=False)):
        assert _agrees(_VERIFIER, text) is None
        assert _VERIFIER.check(text).verdict == Verdict.VERDICT_MALFORMED  # type: ignore[union-attr]


def test_only_a_validity_index_gets_the_compiled_path() -> None:
    class Other:  # another IndexView: its arrays are not the compiled path's to read
        def for_mark(self, plate_type: str, plate_number: str, vin: str) -> None:
            return None

        def is_revoked(self, serial: int) -> bool:
            return False

    verifier = Verifier(Other(), _Fixed(TRUST), lambda: NOW)
    assert verifier.hot is None
    assert verifier.check(VALID_TEXTS[0]).verdict == Verdict.VERDICT_UNKNOWN_VEHICLE


@needs_compiled
def test_a_writer_holding_the_index_sends_the_mark_to_the_python_path() -> None:
    verifier = _verifier()
    with verifier.index._lock:  # type: ignore[attr-defined]
        assert verifier.hot is not None and verifier.hot.check(VALID_TEXTS[0], TRUST, NOW, TODAY) is AUTHENTIC
    assert isinstance(verifier.hot.check(VALID_TEXTS[0], TRUST, NOW, TODAY), ValidMark)


@needs_compiled
def test_a_changed_vehicle_is_seen_at_once() -> None:
    """A new mark for the vehicle (a change-log row): the old one is no longer VALID, the new one is."""
    index = _index()
    verifier = _verifier(index)
    moved = dataclasses.replace(VEHICLES[0], current_serial=5000)
    index.apply([Change(2, moved, None)])
    assert _agrees(verifier, VALID_TEXTS[0]) is AUTHENTIC
    assert isinstance(_agrees(verifier, _mark(moved)), ValidMark)


@needs_compiled
def test_batches_agree_with_the_python_path() -> None:
    texts = [*VALID_TEXTS, *OTHER_TEXTS, VALID_TEXTS[0], "VM1:garbage"]
    with SignatureEngine() as engine:
        verifier = _verifier(signatures=engine)
        checked = verifier.check_many(texts)
    python = verifier.verify_many(texts)
    assert [c.verdict for c in checked] == [p.verdict for p in python]
    assert sum(isinstance(c, ValidMark) for c in checked) == len(VALID_TEXTS) + 1


@needs_compiled
@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(VALID_TEXTS), st.integers(4, 400), st.sampled_from(ALPHABET + "é~"), st.integers(0, 3))
def test_mutated_marks(text: str, at: int, char: str, cut: int) -> None:
    """A character replaced, or the text cut: VALID only if the Python path says so too."""
    verifier = _VERIFIER
    at %= len(text)
    _agrees(verifier, text[:at] + char + text[at + 1 :])
    _agrees(verifier, text[: len(text) - cut])


@needs_compiled
def test_batch_signature_checks_agree_with_libsodium_through_pynacl() -> None:
    from vimark.client.trust import verify_signature

    good = [TRUST.claim(t).signed for t in VALID_TEXTS]
    pk, sig, msg = good[0]
    bad = [(pk, sig, msg + b"x"), (pk, bytes(64), msg), (pk[:31], sig, msg), (pk, sig[:63], msg), (pk, sig, b"")]
    items = [*good, *bad]
    assert hotpath.check_signatures is not None
    assert hotpath.check_signatures(items) == [verify_signature(*i) for i in items] == [True] * len(good) + [False] * 5
    assert hotpath.check_signatures([]) == []
    with pytest.raises(TypeError):
        hotpath.check_signatures([(pk, sig)])
    with SignatureEngine(check_many=hotpath.check_signatures) as engine:
        assert engine.check_many(items * 3) == [verify_signature(*i) for i in items] * 3


@needs_compiled
def test_key_hashes_match_index_keys() -> None:
    for plate_type, plate, vin in [(2, "闽C12345", "LSVAM4187C2184847"), (1, "", ""), (99, "X" * 40, "Y" * 40)]:
        assert hotpath.native.key_hashes(plate_type, plate.encode(), vin.encode()) == (
            index_keys.plate_hash(plate_type, plate), index_keys.vin_hash(vin))  # fmt: skip


_VERIFIER = _verifier() if COMPILED else None


def _moved_index() -> ValidityIndex:
    """An index with a base and a delta: a plate moved to a new vehicle, its old holder renamed, a
    vehicle added and one changed in place."""
    index = ValidityIndex(capacity=4)
    index.load(1, [_vehicle(i) for i in range(1, 40)], [])
    moved = [_vehicle(40, plate_number="闽C00001"), _vehicle(1, plate_number="闽C77777"), _vehicle(41)]
    moved.append(_vehicle(2, status_bits=status_bits("E")))  # in the delta and still in the base
    index.apply([Change(2 + k, v, None) for k, v in enumerate(moved)])
    return index


@needs_compiled
def test_the_compiled_key_probe_finds_what_the_python_probe_finds() -> None:
    index = _moved_index()
    plates = [*(f"闽C{i:05d}" for i in range(0, 45)), "闽C77777", "", "X" * 40]
    for _ in range(2):  # over base and delta, then over a rebuilt base
        for plate in plates:
            for code in (1, 2, 99):
                key = index_keys.plate_hash(code, plate)
                assert hotpath.native.plate_hits(index._rows, index._by_plate, code, plate.encode()) == index._hits(
                    index._by_plate, key, "plate_hash")  # fmt: skip
        for vin in [*(f"LSVAM4187C{i:07d}" for i in range(0, 45)), ""]:
            key = index_keys.vin_hash(vin)
            assert hotpath.native.vin_hits(index._rows, index._by_vin, vin.encode()) == index._hits(
                index._by_vin, key, "vin_hash")  # fmt: skip
        assert index.by_plate("02", "闽C00001").vehicle_id == 40  # type: ignore[union-attr]
        assert index.by_plate("02", "闽C77777").vehicle_id == 1  # type: ignore[union-attr]
        assert index.by_vin(f"LSVAM4187C{41:07d}").plate_number == "闽C00041"  # type: ignore[union-attr]
        index._rebuild_lookups()
    with pytest.raises(AttributeError):
        hotpath.native.plate_hits(index._rows, object(), 2, b"x")


@needs_compiled
def test_the_compiled_key_probe_confirms_colliding_rows_against_their_text() -> None:
    index = ValidityIndex()
    index.load(1, [_vehicle(i) for i in range(1, 6)], [])
    plate_key, vin_key = hotpath.native.key_hashes(2, "闽C00001".encode(), f"LSVAM4187C{1:07d}".encode())
    index._rows["plate_hash"][2:6] = plate_key  # vehicles 2-5 collide with vehicle 1's plate and VIN
    index._rows["vin_hash"][2:6] = vin_key
    index._rebuild_lookups()
    assert len(hotpath.native.plate_hits(index._rows, index._by_plate, 2, "闽C00001".encode())) == 5
    assert index.by_plate("02", "闽C00001").vehicle_id == 1  # type: ignore[union-attr]
    assert index.by_vin(f"LSVAM4187C{1:07d}").vehicle_id == 1  # type: ignore[union-attr]
    assert index.by_plate("02", "闽C00003") is None  # its row now carries another key
    assert index.by_plate("01", "闽C00001") is None


@needs_compiled
def test_the_compiled_read_at_reads_what_pread_reads(tmp_path: Any) -> None:
    """TextOnFile's reads (a checkpoint's plate and VIN text): the same bytes as os.pread, at page
    boundaries and past the end of the file, and the same errors."""
    path = tmp_path / "text"
    path.write_bytes(bytes(i * 7 % 251 for i in range(3 * 4096 + 100)))
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for offset in (0, 1, 4096 - 16, 4096, 2 * 4096 - 1, size - 33, size - 1, size, size + 4096):
            for n in (0, 1, 33, 4096):
                assert hotpath.native.read_at(fd, n, offset) == os.pread(fd, n, offset), (n, offset)
        with pytest.raises(ValueError, match="0 to 4096 bytes"):
            hotpath.native.read_at(fd, 4097, 0)
        with pytest.raises(ValueError):
            hotpath.native.read_at(fd, 1, -1)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as caught:
        hotpath.native.read_at(fd, 33, 0)  # closed
    assert caught.value.errno == 9  # EBADF, as os.pread gives
