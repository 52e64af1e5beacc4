"""Hostile input: the decoder and Verify through a real server never read VALID for anything but an
unmodified certificate, never fail with anything but a CertificateError (decoder) or a verdict /
INVALID_ARGUMENT (server: never INTERNAL or UNKNOWN), and the server stays up.

How many cases CI runs (each test counts its cases and asserts the figure below as a lower bound;
hypothesis runs derandomized with no example database, so every run checks the same cases):

Decoder (`TrustList.authenticate` with the TEST trust list), exhaustive where it says so:
  test_random_text                            1,000 hypothesis examples (any Unicode, NUL, up to 1,100 chars)
  test_random_bytes_behind_the_prefix           500 hypothesis examples
  test_random_inner_sealed_with_the_seal_key    500 hypothesis examples (the seal opens, the content is junk)
  test_every_bit_flip_of_the_envelope         4,728 flips, exhaustive: every bit of every envelope byte of
                                                    valid_sealed_v1, live_online_v1, largest_trailer_plate and
                                                    valid_clear_v1 (591 bytes), with the exact verdict per byte
  test_every_truncation                         904 cut texts + 591 cut envelopes, exhaustive
  test_every_character_substitution          20,850 texts, exhaustive: every position of valid_sealed_v1 and
                                                    valid_clear_v1 x 44 other Base45 characters + 6 outside it
  test_swapped_signatures                        24 (every ordered pair of 4 distinct bodies, sealed and clear)
  test_malleated_signature                        4 (S + L, the non-canonical twin of each signature)
  test_wrong_key_signatures                     300 hypothesis examples (key id x signer x seal key)
  test_oversize_strings_signed_with_test_key    300 hypothesis examples
  test_extreme_numbers_signed_with_test_key     400 hypothesis examples, checked against a model of step 6
  test_junk_fields_signed_with_test_key         300 hypothesis examples (unknown, repeated, wrong-type fields)
  test_an_authentic_body_has_a_representable_issue_time  10 genuine bodies: extreme issued_at, edges
Server (one real server on loopback, SQLite; 3 pristine marks: a print copy, a download and a live QR):
  test_server_every_truncation                  690 texts by VerifyBatch, exhaustive, + the empty text
  test_server_every_bit_flip                  3,624 texts by VerifyBatch, exhaustive over the envelope bytes
  test_server_character_substitutions         8,303 texts by VerifyBatch (every position x up to 12 characters)
  test_server_random_strings                    200 hypothesis examples by unary Verify
  test_server_random_batches                     30 hypothesis batches of up to 301 texts
  test_server_limits                             10 lengths at and over 1,024 characters + 3 batch limits
  test_server_at_date_garbage                   200 hypothesis examples (+ 12 explicit strings, parametrized)
  test_server_forgeries                          17 (swapped, re-signed, malleated, TEST-key texts)
  test_server_genuine_extreme_bodies              5 bodies signed with the server's own key
Each server test ends by verifying every pristine mark VALID and checking health is SERVING.
In all about 31,000 decoder cases and 13,000 server cases; about 30 s of CPU on the 2-core CI machine.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vector_loader import issue, load_vector, seal_key, signing_seed, trust_list

from conftest import MovableClock, start_server, vehicle
from vimark.client.base45 import ALPHABET, b45decode, b45encode
from vimark.client.certificate import (
    MAX_QR_TEXT_LENGTH,
    PREFIX,
    CertificateBody,
    ForgedCertificate,
    MalformedCertificate,
    UnknownKey,
    decode,
    encode,
    signed_message,
)
from vimark.client.domain import PLATE_TYPES
from vimark.client.errors import CertificateError
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.keys import KeyDirectory
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc

SEALED_NAMES = ("valid_sealed_v1", "live_online_v1", "largest_trailer_plate")
CLEAR_NAMES = ("valid_clear_v1",)
VALID_NAMES = ("valid_sealed_v1", "valid_clear_v1", "live_online_v1", "largest_nev_plate", "largest_trailer_plate")
DISTINCT_NAMES = ("valid_sealed_v1", "live_online_v1", "largest_nev_plate", "largest_trailer_plate")  # 4 bodies
SEAL_HEADER, INNER_HEADER, TAG = 15, 66, 16  # bytes (docs/certificate-format.md §3, §4)
ED25519_L = 2**252 + 27742317777372353535851937790883648493  # the group order: S must be below it
FIRST_MONTH, LAST_MONTH, LAST_DAY = 1950 * 12, 2199 * 12 + 11, (dt.date(2199, 12, 31) - dt.date(1970, 1, 1)).days
OUTSIDE = "a~é闽\x00\n"  # substitutes outside the Base45 alphabet
UNICODE = st.characters(codec="utf-8")  # anything protobuf can carry (no lone surrogates)
HYPOTHESIS = {"deadline": None, "derandomize": True, "database": None}
TRUST = trust_list()  # the TEST trust list: signing key 1 and seal key 1


def settle(max_examples: int) -> Callable[[Any], Any]:
    return settings(max_examples=max_examples, suppress_health_check=[HealthCheck.too_slow], **HYPOTHESIS)  # type: ignore[arg-type]


def authenticate(text: str) -> CertificateError:
    """The text must fail authentication with a CertificateError subclass (nothing else, and not pass)."""
    try:
        certificate = TRUST.authenticate(text)
    except CertificateError as exc:
        assert exc.message and exc.reason in {"MALFORMED", "UNKNOWN_KEY", "FORGED", "REVOKED"}
        return exc
    raise AssertionError(f"{text!r} authenticated as {certificate.body}")


def envelope_of(text: str) -> bytes:
    return b45decode(text[len(PREFIX) :])


def text_of(envelope: bytes) -> str:
    return PREFIX + b45encode(envelope)


def seal(inner: bytes, nonce: bytes, seal_key_id: int, key: bytes) -> str:
    header = struct.pack(">BH12s", 0x01, seal_key_id, nonce)
    return text_of(header + ChaCha20Poly1305(key).encrypt(nonce, inner, PREFIX.encode() + header))


def sign(body_bytes: bytes, key_id: int = 1, seed: bytes | None = None, sealed: bool = True) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed or signing_seed("test"))
    return encode(body_bytes, key_id, key.sign(signed_message(key_id, body_bytes)), seal_key() if sealed else None)


def flip_verdict(envelope: bytes, byte: int) -> type[CertificateError] | tuple[type[CertificateError], ...]:
    """The exact outcome of flipping a bit of `byte` in a TEST-key envelope (only key and seal key 1 trusted)."""
    if byte == 0:
        return MalformedCertificate  # 0x01 or 0x02 with one bit flipped is never 0x01 or 0x02
    if byte in (1, 2):
        return UnknownKey  # seal key id (sealed) or signing key id (clear) other than 1
    if envelope[0] == 0x01 or byte < 3 + 64:
        return ForgedCertificate  # the Poly1305 tag, or a clear signature
    return (MalformedCertificate, ForgedCertificate)  # a clear body: unparseable, or the signature fails


# == the decoder ======================================================================================
def test_random_text() -> None:
    count = 0

    @settle(1000)
    @given(
        st.one_of(
            st.text(UNICODE, max_size=1100),
            st.text(alphabet=ALPHABET, max_size=600).map(lambda s: PREFIX + s),
            st.text(UNICODE, max_size=600).map(lambda s: PREFIX + s),
        )
    )
    def run(text: str) -> None:
        nonlocal count
        count += 1
        error = authenticate(text)
        if not text.startswith(PREFIX) or len(text) > MAX_QR_TEXT_LENGTH:
            assert type(error) is MalformedCertificate

    run()
    assert count >= 1000


def test_random_bytes_behind_the_prefix() -> None:
    count = 0

    @settle(500)
    @given(st.binary(max_size=680))
    def run(data: bytes) -> None:
        nonlocal count
        count += 1
        error = authenticate(text_of(data))
        if not data or data[0] not in (0x01, 0x02) or len(text_of(data)) > MAX_QR_TEXT_LENGTH:
            assert type(error) is MalformedCertificate

    run()
    assert count >= 500


def test_random_inner_sealed_with_the_seal_key() -> None:
    """Whoever holds a seal key (every terminal) can seal anything: the split, the body parser and the
    signature check then see hostile bytes."""
    count = 0
    seal_key_id, key = seal_key()

    @settle(500)
    @given(
        inner=st.one_of(
            st.binary(max_size=INNER_HEADER + 1),
            st.binary(max_size=500),
            st.tuples(
                st.sampled_from([b"\x00\x01", b"\x00\x02"]), st.binary(min_size=64, max_size=64), st.binary()
            ).map(lambda t: b"".join(t)),
        ),
        nonce=st.binary(min_size=12, max_size=12),
    )
    def run(inner: bytes, nonce: bytes) -> None:
        nonlocal count
        count += 1
        error = authenticate(seal(inner, nonce, seal_key_id, key))
        if len(inner) <= INNER_HEADER:
            assert type(error) is MalformedCertificate
        assert type(error) in (MalformedCertificate, UnknownKey, ForgedCertificate)

    run()
    assert count >= 500


def test_every_bit_flip_of_the_envelope() -> None:
    """Exhaustive: every bit of every envelope byte, with the exact verdict each byte's role gives."""
    count = 0
    for name in SEALED_NAMES + CLEAR_NAMES:
        envelope = envelope_of(load_vector(name).qr_text)
        for byte in range(len(envelope)):
            for bit in range(8):
                mutant = bytearray(envelope)
                mutant[byte] ^= 1 << bit
                error = authenticate(text_of(bytes(mutant)))
                expected = flip_verdict(envelope, byte)
                assert isinstance(error, expected) and type(error) is not CertificateError, (name, byte, bit, error)
                count += 1
    assert count >= 4728


def test_every_truncation() -> None:
    """Every cut of the text, and every cut of the envelope bytes (re-encoded, so Base45 stays well formed)."""
    texts = envelopes = 0
    for name in SEALED_NAMES + CLEAR_NAMES:
        text = load_vector(name).qr_text
        envelope = envelope_of(text)
        sealed = envelope[0] == 0x01
        for n in range(len(text)):
            error = authenticate(text[:n])
            rest = len(text[len(PREFIX) : n])
            complete = rest // 3 * 2  # bytes carried by whole triples: an exact prefix of the envelope
            if n <= len(PREFIX) or rest % 3 == 1:
                assert type(error) is MalformedCertificate, (name, n)  # no prefix, nothing, or a dangling char
            elif rest % 3 == 0 and sealed:
                assert type(error) is (ForgedCertificate if complete >= SEAL_HEADER + TAG else MalformedCertificate)
            elif rest % 3 == 0 and complete <= 1 + INNER_HEADER:
                assert type(error) is MalformedCertificate, (name, n)
            else:
                assert type(error) in (MalformedCertificate, ForgedCertificate), (name, n)
            texts += 1
        for n in range(len(envelope)):
            error = authenticate(text_of(envelope[:n]))
            if n == 0 or (sealed and n < SEAL_HEADER + TAG) or (not sealed and n <= 1 + INNER_HEADER):
                assert type(error) is MalformedCertificate, (name, n)
            elif sealed:
                assert type(error) is ForgedCertificate, (name, n)  # the tag is cut: the seal fails
            else:
                assert type(error) in (MalformedCertificate, ForgedCertificate), (name, n)
            envelopes += 1
    assert texts >= 904 and envelopes >= 591


def test_every_character_substitution() -> None:
    """Exhaustive over positions and the alphabet, for one sealed and one clear certificate. Strict Base45
    is a bijection, so a substituted text that still decodes carries different bytes (checked on the one
    triple that changed): it is one of the byte mutants above, and cannot authenticate."""
    count = decodable = 0
    for name in ("valid_sealed_v1", "valid_clear_v1"):
        text = load_vector(name).qr_text
        for i in range(len(text)):
            start = len(PREFIX) + (i - len(PREFIX)) // 3 * 3  # the Base45 chunk holding position i
            for c in ALPHABET + OUTSIDE:
                if c == text[i]:
                    continue
                mutant = text[:i] + c + text[i + 1 :]
                error = authenticate(mutant)
                if i < len(PREFIX) or c in OUTSIDE:
                    assert type(error) is MalformedCertificate, (name, i, c)
                else:
                    try:
                        altered = b45decode(mutant[start : start + 3])
                    except CertificateError:
                        assert type(error) is MalformedCertificate, (name, i, c)
                    else:
                        decodable += 1
                        assert altered != b45decode(text[start : start + 3]), (name, i, c)
                count += 1
    assert count >= 20850 and decodable > 15000


def _parts(name: str) -> tuple[int, bytes, bytes]:
    certificate = TRUST.authenticate(load_vector(name).qr_text)
    return certificate.key_id, certificate.signature, certificate.body_bytes


def test_swapped_signatures() -> None:
    count = 0
    parts = {name: _parts(name) for name in DISTINCT_NAMES}
    for a, (key_id, _, body) in parts.items():
        for b, (_, signature, _) in parts.items():
            if a == b:
                continue
            for sealed in (True, False):
                error = authenticate(encode(body, key_id, signature, seal_key() if sealed else None))
                assert type(error) is ForgedCertificate, (a, b, sealed)
                count += 1
    assert count >= 24


def test_malleated_signature() -> None:
    """Ed25519's S + L is the same point equation; RFC 8032 requires refusing S >= L (no second valid text)."""
    count = 0
    for name in SEALED_NAMES + CLEAR_NAMES:
        key_id, signature, body = _parts(name)
        s = int.from_bytes(signature[32:], "little") + ED25519_L
        assert s < 2**256
        twin = signature[:32] + s.to_bytes(32, "little")
        assert type(authenticate(encode(body, key_id, twin, seal_key()))) is ForgedCertificate
        count += 1
    assert count >= 4


def test_wrong_key_signatures() -> None:
    """Re-signed with a key nobody trusts under key id 1 (FORGED), or under any other key id (UNKNOWN_KEY,
    whoever signed); and sealed under the unknown seal key (UNKNOWN_KEY before anything else)."""
    count = 0
    body = load_vector("valid_sealed_v1").body_bytes

    @settle(300)
    @given(
        key_id=st.one_of(st.just(1), st.integers(0, 0xFFFF)),
        signer=st.sampled_from(["test", "wrong", "random"]),
        seed=st.binary(min_size=32, max_size=32),
        sealer=st.sampled_from(["test", "unknown", None]),
    )
    def run(key_id: int, signer: str, seed: bytes, sealer: str | None) -> None:
        nonlocal count
        count += 1
        private = Ed25519PrivateKey.from_private_bytes(seed if signer == "random" else signing_seed(signer))
        text = encode(body, key_id, private.sign(signed_message(key_id, body)), seal_key(sealer) if sealer else None)
        if key_id == 1 and signer == "test" and sealer != "unknown":
            assert TRUST.authenticate(text).body_bytes == body  # the control: this one is genuine
            return
        error = authenticate(text)
        if sealer == "unknown" or key_id != 1:
            assert type(error) is UnknownKey
        else:
            assert type(error) is ForgedCertificate

    run()
    assert count >= 300


def test_oversize_strings_signed_with_test_key() -> None:
    """A genuine signature over a huge plate or VIN: refused (MALFORMED) once the text passes 1,024
    characters; below that the decoder checks form, not shape, and returns exactly what was signed."""
    count = 0
    base = load_vector("valid_sealed_v1").body

    @settle(300)
    @given(
        plate=st.one_of(st.text(UNICODE, max_size=30), st.text(UNICODE, min_size=100, max_size=2000)),
        vin=st.one_of(st.text(UNICODE, max_size=30), st.text(UNICODE, min_size=100, max_size=2000)),
        sealed=st.booleans(),
    )
    def run(plate: str, vin: str, sealed: bool) -> None:
        nonlocal count
        count += 1
        body = replace(base, plate_number=plate, vin=vin)
        text = sign(body.to_bytes(), sealed=sealed)
        if len(text) > MAX_QR_TEXT_LENGTH or not plate:
            error = authenticate(text)
            assert type(error) is MalformedCertificate
            assert ("exceeds" in error.message) is (len(text) > MAX_QR_TEXT_LENGTH)
        else:
            assert TRUST.authenticate(text).body == body

    run()
    assert count >= 300


def _form_is_valid(b: CertificateBody) -> bool:
    """Step 6 of docs/certificate-format.md, written independently of the decoder."""
    return (
        b.serial != 0
        and bool(b.plate_number)
        and b.plate_type in PLATE_TYPES
        and 1 <= b.reason <= 7
        and 1 <= b.presentation <= 3
        and FIRST_MONTH <= b.valid_until <= LAST_MONTH
        and b.valid_from_day <= LAST_DAY
        and FIRST_INSTANT <= b.issued_at <= LAST_INSTANT
    )


UINT32, UINT64, INT32 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


def test_extreme_numbers_signed_with_test_key() -> None:
    count = 0
    base = load_vector("live_online_v1").body

    @settle(400)
    @given(
        serial=st.one_of(st.just(0), st.just(2**64 - 1), UINT64),
        plate_type=st.one_of(st.integers(0, 100), UINT32).map(str),
        valid_until=st.one_of(
            st.integers(FIRST_MONTH - 2, FIRST_MONTH + 1), st.integers(LAST_MONTH - 1, LAST_MONTH + 2), UINT32
        ),
        valid_from_day=st.one_of(st.integers(LAST_DAY - 1, LAST_DAY + 1), UINT32),
        issued_at=st.one_of(st.just(base.issued_at), st.integers(-(2**34), 2**34), INT64),
        reason=st.one_of(st.integers(-1, 9), INT32),
        presentation=st.one_of(st.integers(-1, 5), INT32),
        expires=INT64,
    )
    def run(**fields: Any) -> None:
        nonlocal count
        count += 1
        body = replace(base, presentation_expires_at=fields.pop("expires"), **fields)
        body = replace(body, plate_type=f"{int(body.plate_type):02d}")
        text = sign(body.to_bytes())
        if _form_is_valid(body):
            assert TRUST.authenticate(text).body == body
        else:
            assert type(authenticate(text)) is MalformedCertificate

    run()
    assert count >= 400


def _varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


FIELD_NUMBERS = st.one_of(st.integers(1, 12), st.sampled_from([0, 15, 16, 1000, 2**29 - 1]))
WIRE_FIELD = st.one_of(
    st.tuples(FIELD_NUMBERS, st.just(0), UINT64).map(lambda t: _varint(t[0] << 3) + _varint(t[2])),
    st.tuples(FIELD_NUMBERS, st.just(2), st.binary(max_size=40)).map(
        lambda t: _varint(t[0] << 3 | 2) + _varint(len(t[2])) + t[2]
    ),
    st.tuples(FIELD_NUMBERS, st.sampled_from([1, 3, 4, 5, 6, 7]), st.binary(max_size=9)).map(
        lambda t: _varint(t[0] << 3 | t[1]) + t[2]
    ),
    st.binary(max_size=12),
)


def test_junk_fields_signed_with_test_key() -> None:
    """Unknown fields, repeated fields, wrong wire types, groups and raw junk before or after a real body,
    all genuinely signed: the parser either refuses (MALFORMED) or yields a body whose form is valid."""
    count = 0
    base = load_vector("valid_sealed_v1").body_bytes

    @settle(300)
    @given(before=st.lists(WIRE_FIELD, max_size=4), after=st.lists(WIRE_FIELD, max_size=4))
    def run(before: list[bytes], after: list[bytes]) -> None:
        nonlocal count
        count += 1
        body = b"".join(before) + base + b"".join(after)
        text = sign(body)
        try:
            certificate = TRUST.authenticate(text)
        except MalformedCertificate:
            return
        assert certificate.body_bytes == body and _form_is_valid(certificate.body)

    run()
    assert count >= 300


CHINA = dt.timezone(dt.timedelta(hours=8))
FIRST_INSTANT = int(dt.datetime(1950, 1, 1, tzinfo=CHINA).timestamp())  # 1950-01-01T00:00 China time
LAST_INSTANT = int(dt.datetime(2200, 1, 1, tzinfo=CHINA).timestamp()) - 1  # 2199-12-31T23:59:59 China time
EXTREME_ISSUED_AT = [10**12, -(10**12), 2**63 - 1, -(2**63), 253402300800, -62135596801]


@pytest.mark.parametrize(
    "issued_at", [*EXTREME_ISSUED_AT, FIRST_INSTANT - 1, LAST_INSTANT + 1, FIRST_INSTANT, LAST_INSTANT]
)
def test_an_authentic_body_has_a_representable_issue_time(issued_at: int) -> None:
    """Regression (found by this file): a genuinely signed body with issued_at outside any datetime
    authenticated, then CertificateBody.issued_time / valid_from (read by the server at step 14 when
    valid_from_day is 0) raised ValueError/OSError, and Verify answered INTERNAL. issued_at is now held to
    the years vimark serves, like valid_until_month and valid_from_day: outside them, MALFORMED."""
    body = replace(load_vector("valid_sealed_v1").body, issued_at=issued_at, valid_from_day=0)
    if FIRST_INSTANT <= issued_at <= LAST_INSTANT:
        certificate = TRUST.authenticate(issue(body))
        assert certificate.body.valid_from == certificate.body.issued_time.astimezone(CHINA).date()
        assert 1950 <= certificate.body.valid_from.year <= 2199
    else:
        with pytest.raises(MalformedCertificate, match="outside the years"):
            TRUST.authenticate(issue(body))


# == through a real server ============================================================================
@dataclass
class Site:
    server: VimarkServer
    stub: pb_grpc.MarkServiceStub
    health: health_pb2_grpc.HealthStub
    keys_dir: Path
    pristine: list[str]  # marks that verify VALID


PLATES = [("闽C12345", "LSVAB2BJ5KN000001"), ("粤B54321", "LSVAB2BJ5KN000002")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("hostile")
    KeyDirectory(tmp / "keys").init()
    clock = MovableClock(dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC))
    server = start_server(f"sqlite:///{tmp / 'vimark.db'}", tmp / "keys", clock)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.max_receive_message_length", 2**24)])
    try:
        with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
            client.upsert_vehicles([vehicle(p, vin=v, registered_on="2026-11-02") for p, v in PLATES])
            printed = client.issue(
                request_id="hostile-1", plate_number=PLATES[0][0], plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            ).qr_text
            client.issue(
                request_id="hostile-2", plate_number=PLATES[1][0], plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
            )
            shown = client.present(plate_number=PLATES[1][0], plate_type="02")
        site = Site(
            server,
            pb_grpc.MarkServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
            tmp / "keys",
            [printed, shown.download_qr_text, shown.live_qr_text],
        )
        assert_server_well(site)
        yield site
    finally:
        channel.close()
        server.stop(grace=1)


def assert_server_well(site: Site) -> None:
    for text in site.pristine:
        assert site.stub.Verify(pb.VerifyRequest(qr_text=text), timeout=10).verdict == pb.VERDICT_VALID
    status = site.health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


NOT_VALID = {pb.VERDICT_MALFORMED, pb.VERDICT_UNKNOWN_KEY, pb.VERDICT_FORGED}


def verify_all(site: Site, texts: list[str]) -> list[int]:
    """VerifyBatch in chunks of 1,000 (the maximum); returns one verdict per text."""
    verdicts: list[int] = []
    for i in range(0, len(texts), 1000):
        chunk = texts[i : i + 1000]
        results = site.stub.VerifyBatch(pb.VerifyBatchRequest(qr_texts=chunk), timeout=60).results
        assert len(results) == len(chunk)
        verdicts += [r.verdict for r in results]
    return verdicts


def test_server_every_truncation(site: Site) -> None:
    texts = [t[:n] for t in site.pristine for n in range(1, len(t))]
    verdicts = verify_all(site, texts)
    assert set(verdicts) <= {pb.VERDICT_MALFORMED, pb.VERDICT_FORGED}
    assert len(texts) >= 690
    with pytest.raises(grpc.RpcError) as caught:  # the empty text is a broken request, not a verdict
        site.stub.Verify(pb.VerifyRequest(qr_text=""), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "qr_text" in (caught.value.details() or "")
    assert_server_well(site)


def test_server_every_bit_flip(site: Site) -> None:
    """Exhaustive over the envelope bytes of each pristine mark, with the exact verdict per byte."""
    verdict_of: dict[object, int] = {MalformedCertificate: pb.VERDICT_MALFORMED, UnknownKey: pb.VERDICT_UNKNOWN_KEY}
    texts, expected = [], []
    for text in site.pristine:
        envelope = envelope_of(text)
        for byte in range(len(envelope)):
            for bit in range(8):
                mutant = bytearray(envelope)
                mutant[byte] ^= 1 << bit
                texts.append(text_of(bytes(mutant)))
                # The server has one seal key, so a changed seal key id names none it knows.
                outcome = flip_verdict(envelope, byte)
                expected.append(verdict_of[outcome] if outcome in verdict_of else pb.VERDICT_FORGED)
    verdicts = verify_all(site, texts)
    wrong = [
        (i, pb.Verdict.Name(v), pb.Verdict.Name(e))
        for i, (v, e) in enumerate(zip(verdicts, expected, strict=True))
        if v != e
    ]
    assert not wrong, wrong[:10]
    assert len(texts) >= 3600
    assert_server_well(site)


def test_server_character_substitutions(site: Site) -> None:
    """Every position of each pristine text, 12 substitutes each (8 from the alphabet chosen with a fixed
    seed, then a space, a lower-case letter, a CJK character and NUL)."""
    rng = random.Random(20261125)
    texts = []
    for text in site.pristine:
        for i in range(len(text)):
            others = [c for c in ALPHABET if c != text[i]]
            for c in [*rng.sample(others, 8), *[c for c in " a闽\x00" if c != text[i]]]:
                texts.append(text[:i] + c + text[i + 1 :])
    verdicts = verify_all(site, texts)
    assert set(verdicts) <= NOT_VALID
    assert len(texts) >= 8300
    assert_server_well(site)


def _expect_invalid_argument(method: Callable[..., object], request: object, field: str) -> None:
    """The call is refused with INVALID_ARGUMENT and a message naming the field (never INTERNAL)."""
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert field in (caught.value.details() or ""), caught.value.details()


def test_server_random_strings(site: Site) -> None:
    count = 0

    @settle(200)
    @given(
        st.one_of(
            st.text(UNICODE, max_size=1100),
            st.text(UNICODE, min_size=1000, max_size=1100),
            st.text(alphabet=ALPHABET, max_size=400).map(lambda s: PREFIX + s),
        )
    )
    def run(text: str) -> None:
        nonlocal count
        count += 1
        request = pb.VerifyRequest(qr_text=text)
        if not text or len(text) > MAX_QR_TEXT_LENGTH:
            _expect_invalid_argument(site.stub.Verify, request, "qr_text")
        else:
            assert site.stub.Verify(request, timeout=10).verdict in NOT_VALID

    run()
    assert count >= 200
    assert_server_well(site)


def test_server_random_batches(site: Site) -> None:
    count = 0

    @settle(30)
    @given(st.lists(st.text(UNICODE, max_size=300), min_size=1, max_size=300))
    def run(texts: list[str]) -> None:
        nonlocal count
        count += 1
        batch = [*texts, site.pristine[0]]  # a pristine mark among the junk still reads VALID
        verdicts = verify_all(site, batch)
        assert set(verdicts[:-1]) <= NOT_VALID and verdicts[-1] == pb.VERDICT_VALID

    run()
    assert count >= 30
    assert_server_well(site)


def test_server_limits(site: Site) -> None:
    """The limit counts characters (not UTF-8 bytes): 1,024 of anything is judged, 1,025 is refused and
    the message names the field. A batch of more than 1,000 items is refused as a whole."""
    count = 0
    for filler in ("0", "é", "闽", "\x00", "😀"):
        for length in (MAX_QR_TEXT_LENGTH, MAX_QR_TEXT_LENGTH + 1):
            text = (PREFIX + filler * length)[:length]
            request = pb.VerifyRequest(qr_text=text)
            if length > MAX_QR_TEXT_LENGTH:
                _expect_invalid_argument(site.stub.Verify, request, "qr_text")
            else:
                assert site.stub.Verify(request, timeout=10).verdict == pb.VERDICT_MALFORMED
            count += 1
    too_many = pb.VerifyBatchRequest(qr_texts=[site.pristine[0]] * 1001)
    _expect_invalid_argument(site.stub.VerifyBatch, too_many, "qr_texts")
    _expect_invalid_argument(site.stub.VerifyBatch, pb.VerifyBatchRequest(), "qr_texts")
    # In a batch an oversize item is judged, never VALID (the batch is not refused for one bad scan).
    oversize = verify_all(site, [PREFIX + "0" * MAX_QR_TEXT_LENGTH, "", site.pristine[0]])
    assert oversize == [pb.VERDICT_MALFORMED, pb.VERDICT_MALFORMED, pb.VERDICT_VALID]
    assert count >= 10
    assert_server_well(site)


DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _at_date_outcome(site: Site, at_date: str) -> int | None:
    """The verdict for the first pristine mark judged on `at_date`, or None when refused (INVALID_ARGUMENT
    naming at_date, for Verify and VerifyBatch alike)."""
    unary = pb.VerifyRequest(qr_text=site.pristine[0], at_date=at_date)
    batch = pb.VerifyBatchRequest(qr_texts=[site.pristine[0]], at_date=at_date)
    try:
        verdict = site.stub.Verify(unary, timeout=10).verdict
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "at_date" in (exc.details() or ""), exc
        _expect_invalid_argument(site.stub.VerifyBatch, batch, "at_date")
        return None
    assert site.stub.VerifyBatch(batch, timeout=10).results[0].verdict == verdict
    return verdict


GARBAGE_DATES = [
    "x",
    "2026-02-30",
    "2026-13-01",
    "1949-12-31",
    "2200-01-01",
    "0000-00-00",
    "２０２６-11-25",  # full-width digits
    "2026-11-25\x00",
    " 2026-11-25",
    "2026/11/25",
    "2026-W48-3",  # an ISO week date: a real day, but not YYYY-MM-DD
    "9" * 2000,
]


@pytest.mark.parametrize("at_date", GARBAGE_DATES, ids=lambda d: ascii(d)[:24])
def test_server_at_date_garbage_is_refused(site: Site, at_date: str) -> None:
    assert _at_date_outcome(site, at_date) is None


def test_server_at_date_garbage(site: Site) -> None:
    """Any at_date is either a YYYY-MM-DD day in 1950-2199 (judged) or INVALID_ARGUMENT; never INTERNAL."""
    count = 0

    @settle(200)
    @given(
        st.one_of(
            st.text(UNICODE, max_size=20),
            st.text(UNICODE, min_size=10, max_size=10),
            st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(str),
        )
    )
    def run(at_date: str) -> None:
        nonlocal count
        count += 1
        verdict = _at_date_outcome(site, at_date)
        if not at_date:  # absent: today, 2026-11-25
            assert verdict == pb.VERDICT_VALID
            return
        in_range = bool(DATE.fullmatch(at_date)) and "1950" <= at_date[:4] <= "2199"
        if verdict is not None:
            assert in_range, at_date
            # the mark attests validity from its issue day, 2026-11-25: an earlier day cannot read VALID
            assert verdict != pb.VERDICT_VALID or dt.date.fromisoformat(at_date) >= dt.date(2026, 11, 25)

    run()
    assert count >= 200
    assert_server_well(site)


def _server_parts(site: Site, text: str) -> tuple[int, bytes, bytes]:
    ring = KeyDirectory(site.keys_dir).load()
    certificate = decode(text, ring.seal_keys)
    return certificate.key_id, certificate.signature, certificate.body_bytes


def _server_seal(site: Site) -> tuple[int, bytes]:
    ring = KeyDirectory(site.keys_dir).load()
    return ring.active_seal_key_id, ring.seal_keys[ring.active_seal_key_id]


def test_server_forgeries(site: Site) -> None:
    """Anyone with the seal key (a terminal) re-seals: swapped signatures, signatures by another key under
    the server's key id or an unknown id, a malleated signature, the TEST-key vectors."""
    seal_ = _server_seal(site)
    parts = [_server_parts(site, t) for t in site.pristine]
    impostor = Ed25519PrivateKey.from_private_bytes(signing_seed("wrong"))
    forged, unknown = [], []
    for i, (key_id, signature, body) in enumerate(parts):
        other = parts[(i + 1) % len(parts)][1]
        forged.append(encode(body, key_id, other, seal_))
        forged.append(encode(body, key_id, impostor.sign(signed_message(key_id, body)), seal_))
        s = int.from_bytes(signature[32:], "little") + ED25519_L
        forged.append(encode(body, key_id, signature[:32] + s.to_bytes(32, "little"), seal_))
        unknown.append(encode(body, key_id + 1, impostor.sign(signed_message(key_id + 1, body)), seal_))
    tests = [load_vector(n).qr_text for n in VALID_NAMES]  # signed by a TEST key the server does not trust
    verdicts = verify_all(site, forged + unknown + tests)
    assert verdicts[: len(forged)] == [pb.VERDICT_FORGED] * len(forged)
    assert verdicts[len(forged) : len(forged) + len(unknown)] == [pb.VERDICT_UNKNOWN_KEY] * len(unknown)
    assert set(verdicts[len(forged) + len(unknown) :]) <= {pb.VERDICT_FORGED, pb.VERDICT_UNKNOWN_KEY}
    assert len(verdicts) >= 17
    assert_server_well(site)


def test_server_genuine_extreme_bodies(site: Site) -> None:
    """Bodies signed with the server's own key (as a buggy issuer or a stolen key would make them) with
    extreme fields: the server must answer each with a verdict, never INTERNAL."""
    key_id, _, body_bytes = _server_parts(site, site.pristine[0])
    body = CertificateBody.from_bytes(body_bytes)
    ring = KeyDirectory(site.keys_dir).load()
    _, signer = ring.active_signing_key()
    cases = [
        (replace(body, plate_number="闽" * 100), pb.VERDICT_UNKNOWN_VEHICLE),
        (replace(body, presentation=cpb.PRESENTATION_ONLINE, presentation_expires_at=2**63 - 1), pb.VERDICT_VALID),
        (replace(body, presentation=cpb.PRESENTATION_ONLINE, presentation_expires_at=-(2**63)), None),
        (replace(body, issued_at=10**12, valid_from_day=0), None),
        (replace(body, issued_at=2**63 - 1, valid_from_day=0), None),
    ]
    failures = []
    for extreme, expected in cases:
        data = extreme.to_bytes()
        text = encode(data, key_id, signer.sign(signed_message(key_id, data)), _server_seal(site))
        try:
            verdict = site.stub.Verify(pb.VerifyRequest(qr_text=text), timeout=10).verdict
        except grpc.RpcError as exc:
            failures.append((extreme, exc.code(), exc.details()))
            continue
        if expected is not None:
            assert verdict == expected, extreme
        else:
            assert verdict != pb.VERDICT_VALID, extreme
    assert not failures, failures
    assert_server_well(site)
