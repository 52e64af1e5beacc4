"""Plate numbers (GA 36-2018) and plate types (GA 24.7): the shapes parse_plate_number accepts and
refuses, how typed input is read into the one canonical form, and the rule each refusal names.

Each shape row was written from the standard's shapes, not from the regular expressions under test.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import MovableClock, start_server, vehicle
from vimark.client import domain
from vimark.client.certificate import CertificateBody, IssueReason, Presentation
from vimark.client.cli.vehicles import read_csv
from vimark.client.domain import PLATE_TYPES, PROVINCES, month_of, parse_plate_number, parse_plate_type
from vimark.client.errors import InvalidArgument
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.registry import parse_vehicle

ACCEPTED = [
    ("闽C12345", "ordinary: province, authority letter, 5 digits"),
    ("京AF0236", "ordinary with letters among the 5"),
    ("闽C1234挂", "trailer"),
    ("粤B1234学", "coach car"),
    ("粤BD12345", "small new-energy"),
    ("粤B12345D", "large new-energy"),
    ("使123456", "embassy, 使 first"),
    ("123456使", "embassy, 使 last"),
    ("沪A1234领", "consulate: province, authority letter, 4 digits, 领"),
    ("粤AB12C领", "consulate with letters among the 4"),
    ("川Z0000领", "consulate, authority letter Z"),
]

REFUSED = [
    ("123456领", "6 digits then 领 is no GA 36 shape (the old, wrong consulate shape)"),
    ("沪A12345领", "consulate with 5 characters before 领"),
    ("沪A123领", "consulate with 3 characters before 领"),
    ("沪A12O4领", "consulate with the letter O among the 4"),
    ("沪A1I34领", "consulate with the letter I among the 4"),
    ("沪1A234领", "consulate without its authority letter"),
    ("港A1234领", "港 is not a province"),
    ("领A1234沪", "领 in front"),
    ("使12345", "embassy with 5 digits"),
    ("使1234567", "embassy with 7 digits"),
    ("使123456使", "使 at both ends"),
    ("123456", "digits alone"),
    ("", "empty"),
    ("京A0000O", "the letter O, last"),
    ("京A0000", "4 characters after the authority letter"),
    ("粤BZ12345", "6 characters, Z is no energy letter"),
    ("京A00А00", "a Cyrillic А among the 5: NFKC does not make it Latin"),
    ("京A00-00", "a hyphen is no separator vimark drops"),
    ("京A\u200b00000", "a zero-width space is not whitespace"),
]


@pytest.mark.parametrize(("plate", "why"), ACCEPTED, ids=[p for p, _ in ACCEPTED])
def test_accepted_plate_shapes(plate: str, why: str) -> None:
    assert parse_plate_number(plate) == plate, why


@pytest.mark.parametrize(("plate", "why"), REFUSED, ids=[p or "empty" for p, _ in REFUSED])
def test_refused_plate_shapes(plate: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_plate_number(plate)
    assert caught.value.field == "plate_number", why
    assert repr(plate) in caught.value.message


def test_registry_feed_takes_a_consulate_car() -> None:
    record = parse_vehicle(vehicle("沪A1234领", "04"))
    assert (record.plate_number, record.plate_type) == ("沪A1234领", "04")


def test_registry_feed_refuses_the_old_consulate_shape() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_vehicle(vehicle("123456领", "04"), "vehicles[0]")
    assert caught.value.field == "vehicles[0].plate_number"


# -- typed input is read into the canonical form -------------------------------------------------

# (as typed, canonical, why). Before this rule set the first two rows were refused.
NORMALISED = [
    ("沪a1234领", "沪A1234领", "lower-case authority letter"),
    ("沪A1234领 ", "沪A1234领", "trailing space"),
    ("京a00000", "京A00000", "lower case"),
    ("粤bdx1234", "粤BDX1234", "lower case throughout a small new-energy plate"),
    ("京A·00000", "京A00000", "the middle dot as plates are printed (U+00B7)"),
    ("京A・00000", "京A00000", "katakana middle dot U+30FB (Japanese input methods, CJK fonts)"),
    ("京A･00000", "京A00000", "half-width katakana middle dot U+FF65: NFKC makes it U+30FB"),
    ("京A•00000", "京A00000", "bullet U+2022 (phone symbol pads)"),
    ("京A∙00000", "京A00000", "bullet operator U+2219 (copied text)"),
    ("京A 00000", "京A00000", "a space where the dot is printed"),
    ("京A\u300000000", "京A00000", "an ideographic (full-width) space U+3000"),
    (" 京 A · 0 0 0 0 0\t", "京A00000", "spaces anywhere, a tab at the end"),
    ("京Ａ００００Ｆ", "京A0000F", "full-width letters and digits (a Chinese input method's full-width mode)"),
    ("京ａ·１２３４５", "京A12345", "full-width lower case and a middle dot"),
    ("闽c1234挂", "闽C1234挂", "a trailer plate typed in lower case"),
    ("使 123456", "使123456", "an embassy plate with a space"),
]


@pytest.mark.parametrize(("typed", "canonical", "why"), NORMALISED, ids=[c + " " + w for _, c, w in NORMALISED])
def test_typed_plates_are_read_into_the_canonical_form(typed: str, canonical: str, why: str) -> None:
    assert parse_plate_number(typed) == canonical, why
    assert parse_plate_number(canonical) == canonical  # the canonical form is a fixed point


def test_nfkc_leaves_every_cjk_character_of_a_plate_alone() -> None:
    # Else NFKC could rewrite a plate that was canonical when it was stored and signed.
    for c in PROVINCES + "挂学警港澳使领":
        assert unicodedata.normalize("NFKC", c) == c


@given(st.sampled_from([plate for plate, _ in ACCEPTED]), st.data())
def test_any_spelling_of_an_accepted_plate_is_that_plate(plate: str, data: st.DataObject) -> None:
    """Insert separators anywhere, fold any letter to lower case, widen any character: same plate."""
    typed = []
    for c in plate:
        typed.append(data.draw(st.sampled_from(["", " ", "·", "\u3000", "・", "•"])))
        if c.isascii():
            c = data.draw(st.sampled_from([c, c.lower(), chr(ord(c) + 0xFEE0)]))  # FF01-FF5E: full width
        typed.append(c)
    assert parse_plate_number("".join(typed)) == plate


@given(st.one_of(*(st.from_regex(shape, fullmatch=True) for shape in domain._PLATE_SHAPES)))
def test_a_text_of_a_plate_shape_is_its_own_canonical_form(text: str) -> None:
    """parse_plate_number returns such a text as it is, without reading it through steps 1-3."""
    assert domain._canonical_plate_text(text) == text
    assert parse_plate_number(text) == text


@given(st.text(max_size=12))
def test_whatever_is_accepted_is_canonical(text: str) -> None:
    try:
        plate = parse_plate_number(text)
    except InvalidArgument:
        return
    assert parse_plate_number(plate) == plate
    assert plate.isprintable() and " " not in plate and plate == plate.upper()


# -- plate types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "code"),
    [("2", "02"), ("02", "02"), (" 2 ", "02"), ("２", "02"), ("０２", "02"), ("7", "07"), ("52", "52"), ("99", "99")],
)
def test_plate_type_is_read_as_its_two_digit_code(typed: str, code: str) -> None:
    assert parse_plate_type(typed) == code


def test_every_plate_type_code_is_its_own_canonical_form() -> None:
    assert all(parse_plate_type(code) == code for code in PLATE_TYPES)


@pytest.mark.parametrize("typed", ["09", "9", "0", "00", "002", "2a", "98", "1 3", "0 2"])
def test_unknown_plate_type_lists_the_codes(typed: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_plate_type(typed)
    assert caught.value.field == "plate_type"
    assert caught.value.description.startswith(f"unknown plate type code {typed!r}: one of 01, 02, 03,")
    assert caught.value.description.endswith(", 51, 52, 99")


@pytest.mark.parametrize("typed", ["", "   ", "\u3000"])
def test_missing_plate_type_says_it_is_required(typed: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_plate_type(typed)
    assert (caught.value.field, caught.value.description) == (
        "plate_type",
        "required: the GA 24.7 plate type code, e.g. 02",
    )


# -- each refusal names the rule it breaks -------------------------------------------------------

RULES = [
    ("京A0000O", "letters must be A–Z without I and O (lower case is accepted and read as upper case): 'O'"),
    ("京a00i00", "letters must be A–Z without I and O (lower case is accepted and read as upper case): 'I'"),
    ("港A12345", "a plate starts with a province abbreviation such as 京 or 闽"),
    ("A12345", "a plate starts with a province abbreviation such as 京 or 闽"),
    ("沪1A234领", "the province is followed by the issuing-authority letter A–Z"),
    ("京", "the province is followed by the issuing-authority letter A–Z"),
    ("京A0000", "an ordinary plate has 5 characters after the authority letter, new-energy plates have 6;"),
    ("京A1234567", "an ordinary plate has 5 characters after the authority letter, new-energy plates have 6;"),
    ("闽C12345挂", "an ordinary plate has 5 characters after the authority letter, 挂 the last; this one has 6"),
    ("粤BZ12345", "new-energy plates have 6 characters after the authority letter: an energy letter (D, A, B,"),
    ("粤B1234AB", "new-energy plates have 6 characters after the authority letter"),
    ("沪A12345领", "a consulate plate has 4 characters between the authority letter and 领; this one has 5"),
    ("使12345", "an embassy plate is 使 and 6 digits, 使 first or last"),
    ("京A12挂34", "挂 may only be the last character of a plate"),
    ("京A00#00", "'#' is not a plate character: digits 0–9 and letters A–Z without I and O"),
    ("京A00А00", "'А' (U+0410) is not a plate character"),
    ("", "required: a plate number such as 闽C12345"),
    (" · ", "required: a plate number such as 闽C12345"),
]


@pytest.mark.parametrize(("plate", "rule"), RULES, ids=[p or "empty" for p, _ in RULES])
def test_refusal_names_the_rule(plate: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_plate_number(plate)
    assert caught.value.field == "plate_number"
    assert rule in caught.value.description
    assert caught.value.description.startswith(repr(plate))


def test_the_letter_rule_is_not_given_for_lower_case() -> None:
    assert parse_plate_number("京abcdef") == "京ABCDEF"  # a-f are all letters a plate may hold


def test_refusal_shows_how_the_input_was_read() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_plate_number("京ａ·0000")
    assert caught.value.description.startswith("'京ａ·0000' (read as '京A0000'): an ordinary plate has 5")


def test_a_huge_input_is_refused_in_one_short_line() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_plate_number("闽" * 100_000)
    assert len(caught.value.description) < 120 and "100000 characters" in caught.value.description


# -- every entry point reads plates the same way -------------------------------------------------


def test_registry_feed_stores_the_canonical_form() -> None:
    records = [parse_vehicle(vehicle(plate, typed)) for plate, typed in [("京a·00000", "2"), ("京Ａ00000", "02")]]
    assert {(r.plate_number, r.plate_type) for r in records} == {("京A00000", "02")}


def test_registry_feed_names_the_field_and_the_rule() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_vehicle(vehicle("京A0000O", "02"), "vehicles[2]")
    assert caught.value.field == "vehicles[2].plate_number"
    assert "without I and O" in caught.value.description
    with pytest.raises(InvalidArgument) as caught:
        parse_vehicle(vehicle("京A00000", ""), "vehicles[0]")
    assert caught.value.field == "vehicles[0].plate_type"
    assert caught.value.description == "required: the GA 24.7 plate type code, e.g. 02"


CSV_HEADER = "plate_number,plate_type,vin,category,registered_on,valid_until,status"


def write_csv(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "vehicles.csv"
    path.write_text("\n".join([CSV_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_csv_import_reads_plates_as_every_entry_point_does(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "京a·00000,2,LSVAB2BJ5KN000001,small_passenger,2022-06-15,,",
        "京Ａ００００１,０２,LSVAB2BJ5KN000002,small_passenger,2022-06-15,,",
        "粤bd12345, 52 ,LSVAB2BJ5KN000003,small_passenger,2022-06-15,,",
    )
    got = [(line, v.plate_number, v.plate_type) for line, v in read_csv(path)]
    assert got == [(2, "京A00000", "02"), (3, "京A00001", "02"), (4, "粤BD12345", "52")]


@pytest.mark.parametrize(
    ("cells", "field", "rule"),
    [
        ("京A0000O,02", "plate_number", "'京A0000O': letters must be A–Z without I and O"),
        ("京A00000,9", "plate_type", "unknown plate type code '9': one of 01, 02,"),
        ("京A00000,", "plate_type", "required: the GA 24.7 plate type code, e.g. 02"),
    ],
)
def test_csv_import_refuses_a_bad_plate_before_sending_anything(
    cells: str, field: str, rule: str, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path,
        "京A00001,02,LSVAB2BJ5KN000001,small_passenger,2022-06-15,,",
        cells + ",LSVAB2BJ5KN000002,small_passenger,2022-06-15,,",
    )
    with pytest.raises(InvalidArgument) as caught:
        read_csv(path)
    assert caught.value.field == field
    assert caught.value.description.startswith(f"{path} line 3: {rule}")
    assert caught.value.description.endswith("(nothing was imported)")


@pytest.fixture
def plain_client(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> Iterator[VimarkClient]:
    server: VimarkServer = start_server(sqlite_url, keys_dir, clock)
    try:
        with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as client:
            yield client
    finally:
        server.stop(grace=1)


def test_the_same_car_typed_three_ways_is_one_vehicle_at_every_rpc(plain_client: VimarkClient) -> None:
    new_car = "2026-11-02"  # registered this month: a registration mark is due
    first = plain_client.upsert_vehicles([vehicle("京a·00000", "2", registered_on=new_car)])
    again = plain_client.upsert_vehicles([vehicle("京Ａ０００００", "０２", registered_on=new_car)])
    assert (first.created_count, again.created_count, again.updated_count) == (1, 0, 1)
    issued = plain_client.issue(
        request_id="plates-1", plate_number="京A 00000", plate_type="2", reason=IssueReason.ISSUE_REASON_REGISTRATION
    )
    assert (issued.plate_number, issued.plate_type) == ("京A00000", "02")
    found = plain_client.lookup(plate_number="京ａ００ ０００", plate_type=" 02")
    assert (found.plate_number, found.plate_type, found.current_serial) == ("京A00000", "02", issued.serial)
    assert plain_client.present(plate_number="京a∙00000", plate_type="2").live_qr_text
    status = plain_client.set_status(plate_number="京a00000", plate_type="2", status_codes="G")
    assert status.status_codes == "G"
    with pytest.raises(InvalidArgument) as caught:
        plain_client.lookup(plate_number="京A00000", plate_type="")
    assert (caught.value.field, caught.value.description) == (
        "plate_type",
        "required: the GA 24.7 plate type code, e.g. 02",
    )


# -- a signed body is not read through the input parser ------------------------------------------


def test_certificate_decoder_keeps_a_body_plate_as_signed() -> None:
    """The decoder neither folds nor strips: a body whose plate is not canonical stays as it is, so it
    can never match a vehicle (the index holds canonical plates). Its plate type is still only one of
    PLATE_TYPES, carried as a number (2 on the wire is "02", as before)."""
    body = CertificateBody(
        serial=1,
        plate_number="京a·00000",
        plate_type="02",
        vin="LSVAB2BJ5KN000001",
        valid_until=month_of(dt.date(2027, 6, 1)),
        issued_at=1_790_000_000,
        reason=IssueReason.ISSUE_REASON_REGISTRATION,
        presentation=Presentation.PRESENTATION_OFFLINE,
    )
    decoded = CertificateBody.from_bytes(body.to_bytes())
    assert decoded == body and decoded.plate_number == "京a·00000"
