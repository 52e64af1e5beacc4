"""Every published test vector (tests/vectors/*.json) read by an independent reader.

tests/independent_reader.py is written from docs/certificate-format.md alone; this module imports
nothing from vimark either (not even tests/vector_loader.py, which does): it reads the JSON files
itself. For each vector it checks the outcome the vector records and the step of §6 that gives it;
for valid vectors, the decoded fields, the signature under the recorded key and a byte-identical
re-encoding; for invalid vectors made from a signed body, that body as recorded under `made_from`.
A vector file this module does not know, or a key in a vector it does not know, fails loudly.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from independent_reader import (
    CHINA,
    FIELDS,
    PREFIX,
    STEP_VERDICTS,
    Body,
    Opened,
    Rejected,
    TrustedKey,
    TrustList,
    authenticate,
    b45decode,
    b45encode,
    body_errors,
    decode,
    encode_body,
    encode_text,
    open_text,
    parse_body,
    signed_message,
    synthetic_nonce,
)

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
KEYS_FILE = VECTORS_DIR / "test_keys.json"
VALID = "VALID"

# Every vector this module understands -> the step of docs/certificate-format.md §6 that rejects it
# (None: it authenticates). A new vector file must be added here, with the step it is meant to reach.
EXPECTED_STEP: dict[str, str | None] = {
    "valid_sealed_v1": None,
    "valid_clear_v1": None,
    "live_online_v1": None,
    "largest_nev_plate": None,
    "largest_trailer_plate": None,
    "retired_within_skew": None,
    "oversize": "1",
    "wrong_prefix": "2",
    "empty": "3",
    "not_base45": "3",
    "unknown_envelope_type": "4a",
    "unknown_seal_key": "4c",
    "bitflip_seal": "4d",
    "truncated_sealed": "4d",
    "truncated": "5",
    "valid_until_out_of_range": "6",
    "valid_from_day_huge": "6",
    "unknown_signing_key": "7",
    "bitflip_signature": "8",
    "bitflip_body": "8",
    "wrong_key_signature": "8",
    "revoked_key": "9a",
    "stamped_after_retirement": "9b",
}

# §6: the exception class that carries each verdict; §9: what a vector file holds.
ERROR_CLASSES = {
    VALID: None,
    "MALFORMED": "MalformedCertificate",
    "UNKNOWN_KEY": "UnknownKey",
    "FORGED": "ForgedCertificate",
    "REVOKED": "RevokedKey",
}
COMMON_KEYS = {"name", "description", "provenance", "trust_list", "expected", "qr_text"}
SIGNED_KEYS = {
    "key_id",
    "seal_key_id",
    "sealed",
    "body",
    "body_readable",
    "body_hex",
    "signed_message_hex",
    "signature_hex",
    "sizes",
}
SIZE_KEYS = {"body_bytes", "envelope_bytes", "qr_text_chars", "qr_version_m"}
# A vector's `body` names CertificateBody's fields as §5 does, except `valid_until` for the proto's
# valid_until_month; plate_type is recorded as its two-digit code ("02"), the others as numbers.
JSON_FIELD = {name: name for name, _ in FIELDS.values()} | {"valid_until_month": "valid_until"}
REASON_NAMES = {1: "REGISTRATION", 2: "TRANSFER", 3: "CHANGE", 4: "INSPECTION_PASSED", 5: "EXEMPTION"}
REASON_NAMES |= {6: "REDOWNLOAD", 7: "PAPER_LOST", 8: "BACKFILL"}
PRESENTATION_NAMES = {1: "ONLINE", 2: "OFFLINE", 3: "PRINT"}


# -- reading the files -------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def vector_files() -> list[Path]:
    return sorted(p for p in VECTORS_DIR.glob("*.json") if p != KEYS_FILE)


@cache
def published_keys() -> dict[str, Any]:
    return read_json(KEYS_FILE)


def trust_list(name: str) -> TrustList:
    spec = published_keys()["trust_lists"][name]
    keys = {}
    for item in spec["keys"]:
        assert item["algorithm"] == "Ed25519", item
        assert item["status"] in ("active", "retired", "revoked"), item
        until = item["valid_until"]
        valid_until = None if until is None else dt.datetime.fromisoformat(until)
        keys[int(item["key_id"])] = TrustedKey(
            int(item["key_id"]), bytes.fromhex(item["public_key"]), valid_until, item["status"]
        )
    seals = {int(i): bytes.fromhex(k) for i, k in spec["seal_keys"].items()}
    return TrustList(keys, seals)


def any_seal_key(seal_key_id: int) -> bytes:
    """A test seal key by id, whether or not any trust list holds it."""
    return next(bytes.fromhex(k["key_hex"]) for k in published_keys()["seal_keys"] if k["seal_key_id"] == seal_key_id)


def body_from_json(recorded: dict[str, Any]) -> Body:
    assert set(recorded) == set(JSON_FIELD.values()), f"body fields {sorted(recorded)}: not what §5 lists"
    values: dict[str, Any] = {}
    for name, json_name in JSON_FIELD.items():
        value = recorded[json_name]
        if name == "plate_type":
            assert isinstance(value, str) and len(value) == 2 and value.isdigit(), value
            value = int(value)
        elif name in ("plate_number", "vin"):
            assert isinstance(value, str), value
        else:
            assert isinstance(value, int) and not isinstance(value, bool), (name, value)
        values[name] = value
    return Body(**values)


def readable(body: Body) -> dict[str, str | None]:
    """The body_readable a vector records, derived from §5's meanings of the fields."""
    year, month = divmod(body.valid_until_month, 12)
    valid_from = dt.date(1970, 1, 1) + dt.timedelta(days=body.valid_from_day)
    if body.valid_from_day == 0:  # absent: the China date of issued_at
        valid_from = dt.datetime.fromtimestamp(body.issued_at, CHINA).date()
    expires = body.presentation_expires_at
    return {
        "valid_until": f"{year:04d}-{month + 1:02d}",
        "issued_at": dt.datetime.fromtimestamp(body.issued_at, dt.UTC).isoformat(),
        "reason": "ISSUE_REASON_" + REASON_NAMES[body.reason],
        "presentation": "PRESENTATION_" + PRESENTATION_NAMES[body.presentation],
        "presentation_expires_at": dt.datetime.fromtimestamp(expires, dt.UTC).isoformat() if expires else None,
        "valid_from": valid_from.isoformat(),
    }


def check_signed(vector: dict[str, Any], signed: dict[str, Any]) -> Body:
    """The signed body a vector records (at top level or under made_from) is self-consistent and
    re-encodes, by this reader's encoder alone, to exactly the vector's QR text."""
    keys = set(signed) - (COMMON_KEYS if signed is vector else set())
    assert keys == SIGNED_KEYS, f"{vector['name']}: keys {sorted(keys ^ SIGNED_KEYS)}"
    body = body_from_json(signed["body"])
    body_bytes = bytes.fromhex(signed["body_hex"])
    assert encode_body(body) == body_bytes, "body_hex is not §5's deterministic serialisation of body"
    assert parse_body(body_bytes) == body
    key_id, signature = signed["key_id"], bytes.fromhex(signed["signature_hex"])
    assert bytes.fromhex(signed["signed_message_hex"]) == signed_message(key_id, body_bytes)
    assert len(signature) == 64
    seal_key_id = signed["seal_key_id"]
    assert signed["sealed"] is (seal_key_id is not None)
    seal = None if seal_key_id is None else (seal_key_id, any_seal_key(seal_key_id))
    text = encode_text(key_id, signature, body_bytes, seal)
    assert text == vector["qr_text"], "sealing and Base45 per §2-§4 do not give the vector's text"
    envelope = b45decode(text[len(PREFIX) :])
    sizes = signed["sizes"]
    assert set(sizes) == SIZE_KEYS, sorted(sizes)
    assert sizes["body_bytes"] == len(body_bytes)
    assert sizes["envelope_bytes"] == len(envelope) == (97 if seal else 67) + len(body_bytes)  # §7
    assert sizes["qr_text_chars"] == len(text)
    qr = segno.make_qr(text, error="m", mode="alphanumeric", boost_error=False)  # as §7 measures
    assert sizes["qr_version_m"] == qr.version
    return body


def check_opened(opened: Opened, signed: dict[str, Any]) -> None:
    """What the reader took out of the envelope is the signed body the vector records."""
    assert opened.key_id == signed["key_id"]
    assert opened.signature.hex() == signed["signature_hex"]
    assert opened.body_bytes.hex() == signed["body_hex"]
    assert opened.signed_message.hex() == signed["signed_message_hex"]
    assert opened.sealed is signed["sealed"]
    assert opened.seal_key_id == signed["seal_key_id"]
    assert parse_body(opened.body_bytes) == body_from_json(signed["body"])


# -- the set of vectors ------------------------------------------------------------------------------
def test_every_vector_file_is_one_this_module_understands() -> None:
    names = {p.stem for p in vector_files()}
    unknown, missing = names - set(EXPECTED_STEP), set(EXPECTED_STEP) - names
    assert not unknown, f"new vector file(s) {sorted(unknown)}: add each to EXPECTED_STEP with the step it reaches"
    assert not missing, f"vector file(s) {sorted(missing)} are gone: remove them from EXPECTED_STEP"


def test_vectors_cover_every_verdict() -> None:
    outcomes = {read_json(p)["expected"]["outcome"] for p in vector_files()}
    assert outcomes == set(ERROR_CLASSES)


def test_test_keys_are_what_they_say() -> None:
    """§9 Test keys: the seeds and seal keys are bytes 0-127, and key 1's public key is the published one."""
    keys = published_keys()
    seeds = {k["name"]: k for k in keys["signing_keys"]}
    assert set(seeds) == {"test", "wrong"}
    assert bytes.fromhex(seeds["test"]["seed_hex"]) == bytes(range(32))
    assert bytes.fromhex(seeds["wrong"]["seed_hex"]) == bytes(range(32, 64))
    for key in seeds.values():
        public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["seed_hex"])).public_key()
        assert public.public_bytes_raw().hex() == key["public_key_hex"]
    assert seeds["test"]["public_key_hex"] == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    assert any_seal_key(1) == bytes(range(64, 96)) and any_seal_key(2) == bytes(range(96, 128))
    assert set(keys["trust_lists"]) == {"default", "key1_retired", "key1_revoked"}
    for name in keys["trust_lists"]:
        trust = trust_list(name)
        assert set(trust.keys) == {1} and trust.keys[1].public_key.hex() == seeds["test"]["public_key_hex"]
        assert dict(trust.seal_keys) == {1: any_seal_key(1)}
    assert trust_list("default").keys[1].status == "active"
    retired, revoked = trust_list("key1_retired").keys[1], trust_list("key1_revoked").keys[1]
    assert (retired.status, retired.valid_until) == ("retired", dt.datetime(2026, 11, 25, 1, 55, tzinfo=dt.UTC))
    assert (revoked.status, revoked.valid_until) == ("revoked", dt.datetime(2026, 12, 1, tzinfo=dt.UTC))


# -- each vector -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.stem)
def test_vector_is_well_formed(path: Path) -> None:
    vector = read_json(path)
    assert vector["name"] == path.stem
    assert path.stem in EXPECTED_STEP, f"{path.name} is a vector this module does not know"
    expected = vector["expected"]
    assert set(expected) == {"outcome", "error"}
    assert expected["outcome"] in ERROR_CLASSES, f"unknown outcome {expected['outcome']!r}"
    assert expected["error"] == ERROR_CLASSES[expected["outcome"]]
    assert vector["trust_list"] in published_keys()["trust_lists"]
    assert isinstance(vector["qr_text"], str) and vector["description"] and "TEST KEYS" in vector["provenance"]
    allowed = COMMON_KEYS | (SIGNED_KEYS if expected["outcome"] == VALID else {"made_from"})
    assert set(vector) <= allowed, f"unknown keys {sorted(set(vector) - allowed)}"
    if expected["outcome"] == VALID:
        assert set(vector) == COMMON_KEYS | SIGNED_KEYS
    step = EXPECTED_STEP[path.stem]
    assert (VALID if step is None else STEP_VERDICTS[step]) == expected["outcome"], (
        f"{path.stem}: step {step} gives {STEP_VERDICTS.get(step or '', VALID)}, the vector says {expected['outcome']}"
    )


@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.stem)
def test_independent_reader_agrees_with_vector(path: Path) -> None:
    vector = read_json(path)
    assert path.stem in EXPECTED_STEP, f"{path.name} is a vector this module does not know"
    step = EXPECTED_STEP[path.stem]
    trust = trust_list(vector["trust_list"])
    text = vector["qr_text"]
    if step is not None:
        with pytest.raises(Rejected) as caught:
            authenticate(text, trust)
        assert (caught.value.step, caught.value.verdict) == (step, vector["expected"]["outcome"]), caught.value
        made_from = vector.get("made_from")
        if made_from is not None:
            check_signed(vector, made_from)
            if step in ("4c", "6", "7", "8", "9a", "9b"):  # the envelope opens: it holds made_from
                seal_keys = {**trust.seal_keys}
                if step == "4c":  # sealed with a key no trust list holds: open it with that test key
                    seal_keys[made_from["seal_key_id"]] = any_seal_key(made_from["seal_key_id"])
                check_opened(open_text(text, seal_keys), made_from)
        return

    decoded = authenticate(text, trust)
    body = check_signed(vector, vector)
    check_opened(decoded.opened, vector)
    assert decoded.body == body
    assert body_errors(body) == []
    assert vector["body_readable"] == readable(body)
    # The signature verifies with the recorded key: the test key with that id, from its seed.
    seed = next(k["seed_hex"] for k in published_keys()["signing_keys"] if k["key_id"] == vector["key_id"])
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    message = bytes.fromhex(vector["signed_message_hex"])
    public = Ed25519PublicKey.from_public_bytes(trust.keys[vector["key_id"]].public_key)
    public.verify(decoded.opened.signature, message)
    assert private.sign(message) == decoded.opened.signature  # Ed25519 is deterministic (§9)
    if decoded.opened.sealed:
        inner = decoded.opened.key_id.to_bytes(2, "big") + decoded.opened.signature + decoded.opened.body_bytes
        assert decoded.opened.nonce == synthetic_nonce(trust.seal_keys[vector["seal_key_id"]], inner)  # §3.1


# -- the document's own examples ---------------------------------------------------------------------
DOC_CLEAR_TEXT = (
    "VM1:HB0O80B+K%687J1GJTG%O-7V K817VW6Q$SSGE8OEMK22MIG/*3E*6HCWY8J9I7 UB4TJH49.3URL07NF20MBGC9NTML8:*D QT*50%6H3M9H"
    "B1A8JBM8QF60R6Q13 D49T9V+AQG85H88X6 *9646646T96RIHY605DK9KJHZ08O0%I0L3M10"
)
DOC_CLEAR_ENVELOPE = (
    "020001"
    "80a547407c0b47e8ccc496f69b42f0f673ced8e28d41ceb094104081d01ec136"
    "5fff4d97d53a925c6d9b6847f6edff03cc7ab9ae0861c7e979430f6ddcea1b01"
    "0887ad4b1209e997bd433132333435180222114c5356414232424a354b4e3030303030312889be0130a08299d8063804400350aea201"
)
DOC_SEALED_TEXT = (
    "VM1:V50B90Z%RPPHMZBNZNEB0*7MU.6TG6M*LAY5O/B08P+FVRFO0GVRBN8 3Y9MOLP28RTP2S55X+48JM$Y90CO+A6V0408U+JOC:T*LKO%CZ"
    "%06BH7/T294ETJKRU0IA4OU00IQFTZM66CJ/J871CNORGKO092GAGAIQ%+9YOB5:FHVKBIBO/2*6L5 NX.UTJV/A2.3OWLII7E0GQYUBEEFV*HV"
    "KOB84+WFV1"
)
DOC_SEALED_HEADER = "010001a0dc648af75d40bc2d01fdaf"


@pytest.mark.parametrize(
    ("data", "text"), [(b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"base-45", "UJCLQE7W581"), (b"ietf!", "QED8WEX0")]
)
def test_base45_rfc_examples(data: bytes, text: str) -> None:
    assert b45encode(data) == text and b45decode(text) == data


@pytest.mark.parametrize("text", ["GGW", "A", "BB8A", "bb8", "BB8:Z", "BB8#"])
def test_base45_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        b45decode(text)


def test_document_examples_decode() -> None:
    trust = trust_list("default")
    clear = decode(DOC_CLEAR_TEXT, trust.seal_keys)
    assert clear.opened.envelope.hex() == DOC_CLEAR_ENVELOPE
    sealed = decode(DOC_SEALED_TEXT, trust.seal_keys)
    assert sealed.opened.envelope[:15].hex() == DOC_SEALED_HEADER
    listed = Body(  # the field-by-field listing of §5
        serial=1234567,
        plate_number="闽C12345",
        plate_type=2,
        vin="LSVAB2BJ5KN000001",
        valid_until_month=24329,
        issued_at=1795572000,
        reason=4,
        presentation=3,
        valid_from_day=20782,
    )
    assert sealed.body == clear.body == listed
    assert len(sealed.opened.body_bytes) == 54


# -- steps no vector reaches: the reader still refuses there -----------------------------------------
def _clear(body: bytes) -> str:
    return PREFIX + b45encode(b"\x02\x00\x01" + bytes(64) + body)


@pytest.mark.parametrize(
    ("text", "step"),
    [
        (PREFIX + b45encode(b"\x01\x00\x01" + bytes(27)), "4b"),  # sealed, 30 bytes
        (_clear(b""), "5"),  # inner of exactly 66 bytes
        (_clear(b"\x08"), "6"),  # a tag and no value
        (_clear(b"\x12\x02\xff\xfe"), "6"),  # plate not UTF-8
        (_clear(b"\x0a\x00"), "6"),  # serial as length-delimited
        (_clear(encode_body(Body(plate_number="x", plate_type=2, valid_until_month=24329))), "6"),  # no serial
    ],
)
def test_reader_refuses_at_steps_no_vector_reaches(text: str, step: str) -> None:
    with pytest.raises(Rejected) as caught:
        decode(text, trust_list("default").seal_keys)
    assert caught.value.step == step, caught.value
