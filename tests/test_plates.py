"""Plate-number shapes (GA 36-2018) that parse_plate_number accepts and refuses.

Each row was written from the standard's shapes, not from the regular expressions under test.
"""

from __future__ import annotations

import pytest

from conftest import vehicle
from vimark.client.domain import parse_plate_number
from vimark.client.errors import InvalidArgument
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
    ("沪a1234领", "lower-case authority letter"),
    ("领A1234沪", "领 in front"),
    ("沪A1234领 ", "trailing space"),
    ("使12345", "embassy with 5 digits"),
    ("使1234567", "embassy with 7 digits"),
    ("使123456使", "使 at both ends"),
    ("123456", "digits alone"),
    ("", "empty"),
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
