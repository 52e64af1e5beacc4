"""The certificate codec against its test vectors (tests/vectors/, see docs/certificate-format.md):
every vector gives exactly its expected outcome, encoding is deterministic, altered or random texts
never authenticate, and the largest real certificate fits QR version 10 at level M."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from dataclasses import replace
from types import ModuleType

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from vector_loader import (
    GENERATOR,
    KEYS_FILE,
    VECTORS_DIR,
    Vector,
    issue,
    load_vector,
    load_vectors,
    seal_key,
    trust_list,
    trust_list_with,
)

from vimark.client import certificate as codec
from vimark.client.base45 import ALPHABET, b45decode, b45encode
from vimark.client.certificate import (
    EPOCH_DAY,
    MAX_QR_TEXT_LENGTH,
    PREFIX,
    CertificateBody,
    ForgedCertificate,
    MalformedCertificate,
    decode,
    encode,
    signed_message,
)
from vimark.client.domain import china_date, parse_month
from vimark.client.errors import CertificateError
from vimark.client.trust import RETIRED, RETIREMENT_SKEW, REVOKED, RevokedKey
from vimark.v1 import certificate_pb2

VECTORS = load_vectors()
VALID_VECTORS = [v for v in VECTORS if v.valid]
INVALID_VECTORS = [v for v in VECTORS if not v.valid]
MAX_QR_VERSION = 10
REQUIRED = {
    "valid_sealed_v1", "valid_clear_v1", "live_online_v1", "largest_nev_plate", "largest_trailer_plate",
    "bitflip_signature", "bitflip_seal", "bitflip_body", "wrong_prefix", "not_base45", "truncated",
    "unknown_signing_key", "unknown_seal_key", "wrong_key_signature", "revoked_key",
    "stamped_after_retirement", "oversize", "valid_until_out_of_range", "valid_from_day_huge",
}  # fmt: skip
LAST_DAY = (dt.date(2199, 12, 31) - EPOCH_DAY).days  # the last valid_from_day the decoder accepts


def qr_version(text: str) -> int:
    version = segno.make_qr(text, error="m", mode="alphanumeric", boost_error=False).version
    assert isinstance(version, int), f"{version} is a Micro QR version"
    return version


def assert_never_authenticates(text: str) -> CertificateError:
    """authenticate() must raise a CertificateError subclass, and nothing else, for this text."""
    try:
        certificate = trust_list().authenticate(text)
    except CertificateError as exc:
        assert exc.message
        return exc
    raise AssertionError(f"{text!r} authenticated as {certificate.body}")


# -- the vectors ------------------------------------------------------------------------------------
def test_every_required_vector_exists_with_provenance() -> None:
    assert REQUIRED <= {v.name for v in VECTORS}
    for v in VECTORS:
        assert v.name == v.raw["name"] and v.provenance and v.description
        assert "TEST KEYS" in v.provenance
    assert "TEST KEYS" in json.loads(KEYS_FILE.read_text(encoding="utf-8"))["provenance"]


@pytest.mark.parametrize("vector", VALID_VECTORS, ids=lambda v: v.name)
def test_valid_vector_authenticates_to_its_fields(vector: Vector) -> None:
    certificate = trust_list(vector.trust_list).authenticate(vector.qr_text)
    assert certificate.body == vector.body
    assert certificate.body_bytes == vector.body_bytes
    assert certificate.signed_message == vector.signed_message
    assert certificate.signature == vector.signature
    assert certificate.key_id == vector.key_id
    assert certificate.sealed is vector.sealed


@pytest.mark.parametrize("vector", INVALID_VECTORS, ids=lambda v: v.name)
def test_invalid_vector_raises_exactly_its_verdict(vector: Vector) -> None:
    with pytest.raises(CertificateError) as caught:
        trust_list(vector.trust_list).authenticate(vector.qr_text)
    assert type(caught.value) is vector.error_class
    assert type(caught.value).__name__ == vector.error
    assert caught.value.reason == vector.outcome


@pytest.mark.parametrize("vector", VALID_VECTORS, ids=lambda v: v.name)
def test_encoding_reproduces_the_vector_byte_for_byte(vector: Vector) -> None:
    body_bytes = vector.body.to_bytes()
    assert body_bytes == vector.body_bytes  # deterministic protobuf serialisation
    assert signed_message(vector.key_id, body_bytes) == vector.signed_message
    seal = seal_key() if vector.sealed else None
    assert seal is None or seal[0] == vector.seal_key_id
    assert encode(body_bytes, vector.key_id, vector.signature, seal) == vector.qr_text
    assert issue(vector.body, sealed=vector.sealed) == vector.qr_text  # Ed25519 is deterministic too


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vimark_vector_generator", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vector_files_are_what_the_generator_makes() -> None:
    """The committed files equal a fresh regeneration: the format has not drifted under them."""
    files: dict[str, str] = _generator().build()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in VECTORS_DIR.glob("*.json")}
    assert on_disk == files


# -- Base45 (RFC 9285) -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "text"),
    [(b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"base-45", "UJCLQE7W581"), (b"ietf!", "QED8WEX0")],
)
def test_base45_rfc9285_examples(data: bytes, text: str) -> None:
    assert b45encode(data) == text
    assert b45decode(text) == data


@pytest.mark.parametrize("text", ["GGW", "A", "BB8A", "bb8", "ZZ", "BB8é"])
def test_base45_is_strict(text: str) -> None:
    with pytest.raises(CertificateError):
        b45decode(text)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_base45_round_trip(data: bytes) -> None:
    text = b45encode(data)
    assert set(text) <= set(ALPHABET)
    assert len(text) == len(data) // 2 * 3 + len(data) % 2 * 2
    assert b45decode(text) == data


# -- altered texts never authenticate ----------------------------------------------------------------
SUBSTITUTES = ALPHABET + "a~é闽\x00"


@pytest.mark.parametrize("name", ["valid_sealed_v1", "valid_clear_v1"])
def test_single_character_substitution_never_authenticates(name: str) -> None:
    text = load_vector(name).qr_text
    positions = [0, 2, 3, len(PREFIX), len(PREFIX) + 1, 10, 50, len(text) // 2, len(text) - 2, len(text) - 1]
    for i in positions:
        for c in SUBSTITUTES:
            if c != text[i]:
                assert_never_authenticates(text[:i] + c + text[i + 1 :])


@pytest.mark.parametrize("name", ["valid_sealed_v1", "valid_clear_v1", "largest_trailer_plate"])
def test_every_truncation_never_authenticates(name: str) -> None:
    text = load_vector(name).qr_text
    for n in range(len(text)):
        assert_never_authenticates(text[:n])


# -- the key's life -----------------------------------------------------------------------------------
def test_a_revoked_key_voids_its_marks() -> None:
    body = load_vector("valid_sealed_v1").body
    text = issue(body)
    for valid_until in (None, body.issued_time + dt.timedelta(days=30), body.issued_time - dt.timedelta(days=1)):
        with pytest.raises(RevokedKey):
            trust_list_with(REVOKED, valid_until).authenticate(text)


def test_a_mark_stamped_after_its_key_retired_is_forged() -> None:
    body = load_vector("valid_sealed_v1").body
    retired_at = body.issued_time - RETIREMENT_SKEW
    # Exactly on the skew boundary: genuine.
    assert trust_list_with(RETIRED, retired_at).authenticate(issue(body)).body == body
    # One second later than the key's valid_until plus the skew: the key was no longer signing.
    with pytest.raises(ForgedCertificate):
        trust_list_with(RETIRED, retired_at - dt.timedelta(seconds=1)).authenticate(issue(body))


# -- size -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", VALID_VECTORS, ids=lambda v: v.name)
def test_every_valid_certificate_fits_qr_version_10_at_level_m(vector: Vector) -> None:
    assert set(vector.qr_text) <= set(ALPHABET)  # the whole text, prefix included, is alphanumeric mode
    assert qr_version(vector.qr_text) == vector.qr_version_m <= MAX_QR_VERSION


def test_the_largest_certificate_is_the_trailer_plate_and_fits() -> None:
    largest = max(VALID_VECTORS, key=lambda v: len(v.qr_text))
    assert largest.name == "largest_trailer_plate"
    assert qr_version(largest.qr_text) <= MAX_QR_VERSION
    segno.make_qr(largest.qr_text, error="m", mode="alphanumeric", version=MAX_QR_VERSION, boost_error=False)


def test_oversize_text_is_refused_before_any_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(text: str) -> bytes:
        raise AssertionError("an oversize text reached Base45 decoding")

    monkeypatch.setattr(codec, "b45decode", must_not_decode)
    oversize = load_vector("oversize").qr_text
    assert len(oversize) == MAX_QR_TEXT_LENGTH + 1
    with pytest.raises(MalformedCertificate, match="exceeds"):
        decode(oversize, {})
    with pytest.raises(MalformedCertificate, match="exceeds"):
        trust_list().authenticate(PREFIX + "0" * (MAX_QR_TEXT_LENGTH + 1 - len(PREFIX)))


def test_a_text_of_exactly_the_limit_is_decoded() -> None:
    text = PREFIX + "0" * (MAX_QR_TEXT_LENGTH - len(PREFIX))
    with pytest.raises(MalformedCertificate, match="envelope type"):  # got past the size check and Base45
        decode(text, {})


# -- random input ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=1100), st.text(alphabet=ALPHABET, max_size=400).map(lambda s: PREFIX + s)))
def test_random_text_never_authenticates(text: str) -> None:
    assert_never_authenticates(text)


@settings(max_examples=200, deadline=None)
@given(envelope_type=st.sampled_from([0x01, 0x02]), key_id=st.sampled_from([1, 2]), rest=st.binary(max_size=300))
def test_random_envelopes_never_authenticate(envelope_type: int, key_id: int, rest: bytes) -> None:
    """Random bytes behind a plausible envelope type and key id: exercises the seal, the split and the
    protobuf parser on hostile input."""
    assert_never_authenticates(PREFIX + b45encode(bytes([envelope_type, 0, key_id]) + rest))


@settings(max_examples=200, deadline=None)
@given(
    key_id=st.sampled_from([0, 1, 2, 0xFFFF]),
    signature=st.binary(min_size=64, max_size=64),
    body=st.one_of(st.binary(max_size=200), st.just(load_vector("valid_sealed_v1").body_bytes)),
)
def test_sealed_forgeries_never_authenticate(key_id: int, signature: bytes, body: bytes) -> None:
    """Whoever holds the seal key (every terminal does) can seal anything; the signature still decides."""
    assert_never_authenticates(encode(body, key_id, signature, seal_key()))


def test_decoding_a_valid_body_keeps_every_field() -> None:
    body = load_vector("live_online_v1").body
    assert CertificateBody.from_bytes(body.to_bytes()) == body
    assert body.valid_until_text == "2027-06"


# -- the body's form (step 6) ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["valid_until_out_of_range", "valid_from_day_huge"])
def test_a_genuine_signature_does_not_save_a_validity_outside_the_served_years(name: str) -> None:
    """These vectors are signed and sealed with the test keys: only the form check refuses them."""
    vector = load_vector(name)
    body = vector.made_from_body
    assert body.to_bytes() == vector.made_from_body_bytes
    assert signed_message(1, vector.made_from_body_bytes) == vector.made_from_signed_message
    Ed25519PublicKey.from_public_bytes(trust_list().keys[1].public_key).verify(
        vector.made_from_signature, vector.made_from_signed_message
    )
    assert issue(body) == vector.qr_text
    with pytest.raises(MalformedCertificate, match="outside the years"):
        CertificateBody.from_bytes(vector.made_from_body_bytes)
    with pytest.raises(MalformedCertificate, match="outside the years"):
        trust_list().authenticate(vector.qr_text)


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [
        ({"valid_until": parse_month("1950-01")}, True),
        ({"valid_until": parse_month("2199-12")}, True),
        ({"valid_until": parse_month("1950-01") - 1}, False),
        ({"valid_until": parse_month("2199-12") + 1}, False),
        ({"valid_until": 0}, False),
        ({"valid_from_day": LAST_DAY}, True),
        ({"valid_from_day": LAST_DAY + 1}, False),
    ],
)
def test_validity_bounds_are_exact(changes: dict[str, int], accepted: bool) -> None:
    body = replace(load_vector("valid_sealed_v1").body, **changes)
    text = issue(body)
    if accepted:
        assert trust_list().authenticate(text).body == body
    else:
        with pytest.raises(MalformedCertificate, match="outside the years"):
            trust_list().authenticate(text)


@pytest.mark.parametrize(("field", "value"), [("reason", 0), ("reason", 9), ("presentation", 0), ("presentation", 4)])
def test_an_unknown_issue_reason_or_presentation_is_malformed(field: str, value: int) -> None:
    body = replace(load_vector("valid_sealed_v1").body, **{field: value})
    with pytest.raises(MalformedCertificate, match="unknown issue reason or presentation"):
        trust_list().authenticate(issue(body))


# -- valid_from -------------------------------------------------------------------------------------
def test_valid_from_is_the_encoded_day() -> None:
    body = load_vector("largest_nev_plate").body
    assert body.valid_from_day == (dt.date(2026, 6, 18) - EPOCH_DAY).days
    assert body.valid_from == dt.date(2026, 6, 18)
    assert replace(body, valid_from_day=1).valid_from == dt.date(1970, 1, 2)
    assert replace(body, valid_from_day=LAST_DAY).valid_from == dt.date(2199, 12, 31)


def test_valid_from_zero_is_the_issue_day_in_china() -> None:
    # 16:30 UTC on 2026-11-24 is 00:30 on 2026-11-25 in China: the China date, not the UTC date.
    late_evening_utc = int(dt.datetime(2026, 11, 24, 16, 30, tzinfo=dt.UTC).timestamp())
    body = replace(load_vector("valid_sealed_v1").body, issued_at=late_evening_utc, valid_from_day=0)
    assert body.valid_from == dt.date(2026, 11, 25)
    # 0 is not written (a body from before field 10 looks the same) and decodes to the same day.
    on_the_wire = certificate_pb2.CertificateBody.FromString(body.to_bytes())
    assert "valid_from_day" not in {f.name for f, _ in on_the_wire.ListFields()}
    assert CertificateBody.from_bytes(body.to_bytes()).valid_from == dt.date(2026, 11, 25)


@pytest.mark.parametrize("vector", VALID_VECTORS, ids=lambda v: v.name)
def test_every_valid_vector_attests_validity_from_a_day_no_later_than_its_issue(vector: Vector) -> None:
    body = vector.body
    assert body.valid_from_day  # issuers always write the field
    assert body.valid_from <= china_date(body.issued_time)
    if body.reason == codec.IssueReason.ISSUE_REASON_INSPECTION_PASSED:
        assert body.valid_from == china_date(body.issued_time)  # a fresh grant: the issue day
