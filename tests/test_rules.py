"""The rules engine against hand-worked tables (docs/domain.md).

Every expected value below was worked out by hand from the rules, never by calling the code under
test; the comment beside a row shows the working (ages are whole years at the due month).
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from vimark.client.domain import VehicleCategory, parse_month, status_bits
from vimark.client.errors import InvalidArgument, RuleViolation
from vimark.server import rules
from vimark.server.rules import IssueReason, RuleConfig, VehicleFacts

Cat = VehicleCategory
D = dt.date


def m(text: str) -> int:
    return parse_month(text)


def ms(*texts: str) -> list[int]:
    return [m(t) for t in texts]


def car(
    registered: str,
    category: VehicleCategory = Cat.SMALL_PASSENGER,
    seats: int | None = 5,
    lost: bool = False,
    status: str = "A",
) -> VehicleFacts:
    return VehicleFacts(category, D.fromisoformat(registered), seats, lost, status_bits(status))


def first_dues(facts: VehicleFacts, n: int, config: RuleConfig = rules.DEFAULT_CONFIG) -> list[int]:
    return list(itertools.islice(rules.grid(facts, config), n))


def refusal(excinfo: pytest.ExceptionInfo[RuleViolation]) -> tuple[str, str]:
    return excinfo.value.reason, excinfo.value.message


# ---------------------------------------------------------------------------------------------
# R7 grids, one table per category


COMMERCIAL_PASSENGER = [
    # registered 2019-04: 12 months while age < 5 (2019-04 .. 2023-04), then 6 from 2024-04 (age 5).
    pytest.param(
        "2019-04-15",
        ms("2020-04", "2021-04", "2022-04", "2023-04", "2024-04", "2024-10", "2025-04", "2025-10"),
        id="12-until-5-then-6",
    ),
]

GOODS = [
    # registered 2012-07: 12 months for ages 0..9, then 6 from 2022-07 (age 10); the reform is irrelevant.
    pytest.param(
        "2012-07-01",
        ms(
            *(f"{y}-07" for y in range(2013, 2023)),
            "2023-01",
            "2023-07",
            "2024-01",
        ),
        id="12-until-10-then-6",
    ),
]

LARGE_PASSENGER = [
    # registered 2015-01: 2016-01 .. 2025-01 (age 10) yearly, then 6 months.
    pytest.param(
        "2015-01-31",
        ms(*(f"{y}-01" for y in range(2016, 2026)), "2025-07", "2026-01"),
        id="12-until-10-then-6",
    ),
]

SMALL_PASSENGER = [
    # 2016-05: Art. 16 until 2022-05 (age 6, pre-reform: 12) -> 2023-05 (age 7, reform: 24) -> 2025-05
    # (age 9 < 10: 24) -> 2027-05 (age 11: 12) ... 2031-05 (age 15: still 12, no 6-month step).
    pytest.param(
        "2016-05-20",
        5,
        ms(
            "2018-05",
            "2020-05",
            "2022-05",
            "2023-05",
            "2025-05",
            "2027-05",
            "2028-05",
            "2029-05",
            "2030-05",
            "2031-05",
            "2032-05",
        ),
        id="2016-05-crosses-reform-at-age-6",
    ),
    # 2021-03: 2023-03 is the first reform due: 24 at ages 2, 4, 6, 8; 12 from 2031-03 (age 10).
    pytest.param(
        "2021-03-08",
        5,
        ms("2023-03", "2025-03", "2027-03", "2029-03", "2031-03", "2032-03", "2033-03"),
        id="2021-03-all-reform",
    ),
    # 2016-10: the age-6 due 2022-10 falls on the reform date itself: reform, 24 -> 2024-10 (age 8)
    # -> 2026-10 (age 10) -> 12.
    pytest.param(
        "2016-10-31",
        5,
        ms("2018-10", "2020-10", "2022-10", "2024-10", "2026-10", "2027-10"),
        id="2016-10-age-6-due-on-reform-day",
    ),
    # 2016-09: the age-6 due 2022-09 is the month before: pre-reform 12 -> 2023-09 (age 7, 24) ->
    # 2025-09 (age 9, 24) -> 2027-09 (age 11, 12).
    pytest.param(
        "2016-09-01",
        5,
        ms("2018-09", "2020-09", "2022-09", "2023-09", "2025-09", "2027-09", "2028-09"),
        id="2016-09-age-6-due-month-before-reform",
    ),
    # 2005-01: 24 to age 6 (2011-01), 12 to age 15 (2020-01), then 6 until 2022-07 (pre-reform);
    # 2023-01 (age 18) is a reform due: 12 from then on.
    pytest.param(
        "2005-01-10",
        None,
        ms(
            "2007-01",
            "2009-01",
            "2011-01",
            *(f"{y}-01" for y in range(2012, 2021)),
            "2020-07",
            "2021-01",
            "2021-07",
            "2022-01",
            "2022-07",
            "2023-01",
            "2024-01",
            "2025-01",
        ),
        id="2005-01-old-car-6-month-steps-end-at-reform",
    ),
    # 10 seats is outside the reform (at most 9): Art. 16 cycle, 12 from 2027-03 (age 6).
    pytest.param(
        "2021-03-08",
        10,
        ms("2023-03", "2025-03", "2027-03", "2028-03", "2029-03"),
        id="10-seats-keeps-art-16",
    ),
    # 7 seats is inside the reform: same grid as a 5-seater.
    pytest.param(
        "2021-03-08",
        7,
        ms("2023-03", "2025-03", "2027-03", "2029-03", "2031-03", "2032-03"),
        id="7-seats-reform",
    ),
]

SMALL_VAN = [
    # 2021-03: Art. 16 small-passenger cycle regardless of the reform: 24 to age 6 (2027-03), 12 to
    # age 15 (2036-03), then 6.
    pytest.param(
        "2021-03-08",
        ms("2023-03", "2025-03", "2027-03", *(f"{y}-03" for y in range(2028, 2037)), "2036-09", "2037-03"),
        id="art-16-cycle-after-reform",
    ),
]

MOTORCYCLE = [
    # 2020-06: 24 at ages 0 and 2, then 12 from 2024-06 (age 4).
    pytest.param("2020-06-30", ms("2022-06", "2024-06", "2025-06", "2026-06"), id="24-until-4-then-12"),
]

OTHER = [
    pytest.param("2023-11-11", ms("2024-11", "2025-11", "2026-11"), id="12-always"),
]


@pytest.mark.parametrize(("registered", "expected"), COMMERCIAL_PASSENGER)
def test_grid_commercial_passenger(registered: str, expected: list[int]) -> None:
    assert first_dues(car(registered, Cat.COMMERCIAL_PASSENGER), len(expected)) == expected


@pytest.mark.parametrize(("registered", "expected"), GOODS)
def test_grid_goods(registered: str, expected: list[int]) -> None:
    assert first_dues(car(registered, Cat.GOODS, seats=2), len(expected)) == expected


@pytest.mark.parametrize(("registered", "expected"), LARGE_PASSENGER)
def test_grid_large_passenger(registered: str, expected: list[int]) -> None:
    assert first_dues(car(registered, Cat.LARGE_PASSENGER, seats=45), len(expected)) == expected


@pytest.mark.parametrize(("registered", "seats", "expected"), SMALL_PASSENGER)
def test_grid_small_passenger(registered: str, seats: int | None, expected: list[int]) -> None:
    assert first_dues(car(registered, seats=seats), len(expected)) == expected


@pytest.mark.parametrize(("registered", "expected"), SMALL_VAN)
def test_grid_small_van(registered: str, expected: list[int]) -> None:
    assert first_dues(car(registered, Cat.SMALL_VAN, seats=7), len(expected)) == expected


@pytest.mark.parametrize(("registered", "expected"), MOTORCYCLE)
def test_grid_motorcycle(registered: str, expected: list[int]) -> None:
    assert first_dues(car(registered, Cat.MOTORCYCLE, seats=2), len(expected)) == expected


@pytest.mark.parametrize(("registered", "expected"), OTHER)
def test_grid_other(registered: str, expected: list[int]) -> None:
    assert first_dues(car(registered, Cat.OTHER, seats=None), len(expected)) == expected


@pytest.mark.parametrize(
    ("facts", "due", "expected"),
    [
        pytest.param(car("2016-05-20"), m("2022-05"), 12, id="small-age-6-pre-reform"),
        pytest.param(car("2016-05-20"), m("2025-05"), 24, id="small-age-9-reform"),
        pytest.param(car("2005-01-10"), m("2022-07"), 6, id="small-age-17-pre-reform"),
        pytest.param(car("2005-01-10"), m("2023-01"), 12, id="small-age-18-reform"),
        pytest.param(car("2016-05-20", seats=None), m("2025-05"), 24, id="unknown-seats-reform"),
        pytest.param(car("2019-04-15", Cat.COMMERCIAL_PASSENGER), m("2024-03"), 12, id="commercial-age-4"),
        pytest.param(car("2019-04-15", Cat.COMMERCIAL_PASSENGER), m("2024-04"), 6, id="commercial-age-5"),
    ],
)
def test_interval_months(facts: VehicleFacts, due: int, expected: int) -> None:
    assert rules.interval_months(facts, due) == expected


@pytest.mark.parametrize(
    ("facts", "month", "expected"),
    [
        pytest.param(car("2021-03-08"), m("2021-03"), m("2023-03"), id="registration-month"),
        pytest.param(car("2021-03-08"), m("2023-02"), m("2023-03"), id="month-before-due"),
        pytest.param(car("2021-03-08"), m("2023-03"), m("2025-03"), id="due-month-is-not-after-itself"),
        pytest.param(car("2016-05-20"), m("2022-06"), m("2023-05"), id="across-reform"),
    ],
)
def test_next_grid_due_after(facts: VehicleFacts, month: int, expected: int) -> None:
    assert rules.next_grid_due_after(facts, month) == expected


def test_first_due() -> None:
    assert rules.first_due(car("2024-06-10")) == m("2026-06")
    assert rules.first_due(car("2024-06-10", Cat.COMMERCIAL_PASSENGER)) == m("2025-06")


# ---------------------------------------------------------------------------------------------
# R6 exemption


MOTO_6 = RuleConfig(motorcycle_exempt_years=6)

EXEMPTION = [
    # small passenger 2021-03, 5 seats, reform dues at ages 2, 4, 6, 8, 10
    pytest.param(car("2021-03-08"), m("2023-03"), rules.DEFAULT_CONFIG, True, id="reform-age-2"),
    pytest.param(car("2021-03-08"), m("2025-03"), rules.DEFAULT_CONFIG, True, id="reform-age-4"),
    pytest.param(car("2021-03-08"), m("2027-03"), rules.DEFAULT_CONFIG, False, id="reform-age-6-lane-test"),
    pytest.param(car("2021-03-08"), m("2029-03"), rules.DEFAULT_CONFIG, True, id="reform-age-8"),
    pytest.param(car("2021-03-08"), m("2031-03"), rules.DEFAULT_CONFIG, False, id="reform-age-10-lane-test"),
    pytest.param(car("2021-03-08"), m("2032-03"), rules.DEFAULT_CONFIG, False, id="reform-age-11"),
    # before the reform: age 8 (2012-05 car due 2020-05) needs a lane test
    pytest.param(car("2012-05-01"), m("2020-05"), rules.DEFAULT_CONFIG, False, id="pre-reform-age-8"),
    pytest.param(car("2012-05-01"), m("2016-05"), rules.DEFAULT_CONFIG, True, id="pre-reform-age-4"),
    # 2016-05 car after the reform sits at ages 7 and 9: never exempt again
    pytest.param(car("2016-05-20"), m("2023-05"), rules.DEFAULT_CONFIG, False, id="reform-age-7"),
    pytest.param(car("2016-05-20"), m("2025-05"), rules.DEFAULT_CONFIG, False, id="reform-age-9"),
    # seats: before the reform fewer than 7; from the reform at most 9; unknown = ok
    pytest.param(car("2018-01-05", seats=6), m("2020-01"), rules.DEFAULT_CONFIG, True, id="pre-reform-6-seats"),
    pytest.param(car("2018-01-05", seats=7), m("2020-01"), rules.DEFAULT_CONFIG, False, id="pre-reform-7-seats"),
    pytest.param(car("2018-01-05", seats=None), m("2020-01"), rules.DEFAULT_CONFIG, True, id="pre-reform-unknown"),
    pytest.param(car("2021-01-05", seats=7), m("2023-01"), rules.DEFAULT_CONFIG, True, id="reform-7-seats"),
    pytest.param(car("2021-01-05", seats=9), m("2023-01"), rules.DEFAULT_CONFIG, True, id="reform-9-seats"),
    pytest.param(car("2021-01-05", seats=10), m("2023-01"), rules.DEFAULT_CONFIG, False, id="reform-10-seats"),
    pytest.param(car("2021-01-05", seats=None), m("2023-01"), rules.DEFAULT_CONFIG, True, id="reform-unknown"),
    # lost exemption
    pytest.param(car("2021-03-08", lost=True), m("2023-03"), rules.DEFAULT_CONFIG, False, id="lost"),
    # the exemption began on 2014-09-01
    pytest.param(car("2010-06-01"), m("2012-06"), rules.DEFAULT_CONFIG, False, id="before-2014-09"),
    pytest.param(car("2012-09-01"), m("2014-09"), rules.DEFAULT_CONFIG, True, id="from-2014-09"),
    # other categories
    pytest.param(car("2021-03-08", Cat.SMALL_VAN), m("2023-03"), rules.DEFAULT_CONFIG, False, id="van"),
    pytest.param(car("2021-03-08", Cat.GOODS), m("2023-03"), rules.DEFAULT_CONFIG, False, id="goods"),
    pytest.param(
        car("2021-03-08", Cat.COMMERCIAL_PASSENGER),
        m("2023-03"),
        rules.DEFAULT_CONFIG,
        False,
        id="commercial",
    ),
    pytest.param(car("2021-03-08", Cat.LARGE_PASSENGER), m("2023-03"), rules.DEFAULT_CONFIG, False, id="large"),
    pytest.param(car("2021-03-08", Cat.OTHER), m("2023-03"), rules.DEFAULT_CONFIG, False, id="other"),
    # motorcycles: off by default; with 6, ages 2 and 4
    pytest.param(car("2020-06-30", Cat.MOTORCYCLE), m("2022-06"), rules.DEFAULT_CONFIG, False, id="moto-default"),
    pytest.param(car("2020-06-30", Cat.MOTORCYCLE), m("2022-06"), MOTO_6, True, id="moto-6-age-2"),
    pytest.param(car("2020-06-30", Cat.MOTORCYCLE), m("2024-06"), MOTO_6, True, id="moto-6-age-4"),
    pytest.param(car("2020-06-30", Cat.MOTORCYCLE), m("2025-06"), MOTO_6, False, id="moto-6-age-5"),
    pytest.param(
        car("2020-06-30", Cat.MOTORCYCLE),
        m("2024-06"),
        RuleConfig(motorcycle_exempt_years=4),
        False,
        id="moto-4-age-4",
    ),
    pytest.param(car("2020-06-30", Cat.MOTORCYCLE, lost=True), m("2022-06"), MOTO_6, False, id="moto-lost"),
]


@pytest.mark.parametrize(("facts", "due", "config", "expected"), EXEMPTION)
def test_exemption_eligible(facts: VehicleFacts, due: int, config: RuleConfig, expected: bool) -> None:
    assert rules.exemption_eligible(facts, due, config) is expected


# ---------------------------------------------------------------------------------------------
# The window and validity


@pytest.mark.parametrize(
    ("valid_until", "config", "expected"),
    [
        pytest.param(m("2027-06"), rules.DEFAULT_CONFIG, D(2027, 4, 1), id="3-months"),
        pytest.param(m("2027-01"), rules.DEFAULT_CONFIG, D(2026, 11, 1), id="3-months-across-year"),
        pytest.param(m("2027-06"), RuleConfig(window_months=1), D(2027, 6, 1), id="1-month"),
        pytest.param(m("2027-06"), RuleConfig(window_months=6), D(2027, 1, 1), id="6-months"),
    ],
)
def test_window_opens(valid_until: int, config: RuleConfig, expected: dt.date) -> None:
    assert rules.window_opens(valid_until, config) == expected


@pytest.mark.parametrize(
    ("valid_until", "today", "expected"),
    [
        pytest.param(None, D(2027, 6, 1), False, id="no-validity"),
        pytest.param(m("2027-06"), D(2027, 6, 30), True, id="last-day-of-month"),
        pytest.param(m("2027-06"), D(2027, 7, 1), False, id="next-day"),
        pytest.param(m("2028-02"), D(2028, 2, 29), True, id="leap-day"),
        pytest.param(m("2028-02"), D(2028, 3, 1), False, id="after-leap-day"),
        pytest.param(m("2027-12"), D(2027, 12, 31), True, id="year-end"),
        pytest.param(m("2027-12"), D(2028, 1, 1), False, id="new-year"),
    ],
)
def test_within_validity(valid_until: int | None, today: dt.date, expected: bool) -> None:
    assert rules.within_validity(valid_until, today) is expected


# ---------------------------------------------------------------------------------------------
# R8 overdue cycles and scrapping


SMALL_2021 = car("2021-03-08")  # grid 2023-03, 2025-03, 2027-03, 2029-03, 2031-03
COMMERCIAL_2019 = car("2019-04-15", Cat.COMMERCIAL_PASSENGER)  # ... 2024-04, 2024-10, 2025-04, 2025-10

# Complete cycles since the validity ended: a cycle is complete once the next grid due month ends.
OVERDUE = [
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 3, 31), 0, id="last-day-within"),
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 4, 1), 0, id="next-day-first-cycle-running-0"),
    pytest.param(SMALL_2021, m("2025-03"), D(2027, 3, 31), 0, id="first-cycle-not-ended-0"),
    pytest.param(SMALL_2021, m("2025-03"), D(2027, 4, 1), 1, id="first-cycle-ended-1"),
    pytest.param(SMALL_2021, m("2025-03"), D(2029, 4, 1), 2, id="second-cycle-ended-2"),
    pytest.param(SMALL_2021, m("2025-03"), D(2031, 3, 31), 2, id="third-cycle-last-day-2"),
    pytest.param(SMALL_2021, m("2025-03"), D(2031, 4, 1), 3, id="third-cycle-ended-3"),
    # 6-month steps: after 2024-04, the dues 2024-10 and 2025-04 have ended by 2025-05-01
    pytest.param(COMMERCIAL_2019, m("2024-04"), D(2025, 5, 1), 2, id="commercial-6-month-steps-2"),
    # no validity at all: counted from the first due month (2023-03), the implicit first validity
    pytest.param(SMALL_2021, None, D(2023, 3, 31), 0, id="none-before-first-due"),
    pytest.param(SMALL_2021, None, D(2023, 4, 1), 0, id="none-first-due-ended-0"),
    pytest.param(SMALL_2021, None, D(2027, 4, 1), 2, id="none-2025-and-2027-ended-2"),
    # an off-grid valid_until (imported data): the partial cycle runs to the next grid due month,
    # whole cycles follow the grid (2025-04 -> 2027-03 partial; 2027-03 -> 2029-03 the first whole)
    pytest.param(SMALL_2021, m("2025-04"), D(2025, 5, 1), 0, id="off-grid-0"),
    pytest.param(SMALL_2021, m("2025-04"), D(2027, 4, 1), 0, id="off-grid-partial-cycle-0"),
    pytest.param(SMALL_2021, m("2025-04"), D(2029, 4, 1), 1, id="off-grid-first-whole-cycle-1"),
    # ending a month before a grid due month: 2025-02 -> 2025-03 partial, then 2027-03 and 2029-03
    pytest.param(SMALL_2021, m("2025-02"), D(2025, 4, 1), 0, id="just-before-grid-0"),
    pytest.param(SMALL_2021, m("2025-02"), D(2029, 4, 1), 2, id="just-before-grid-2"),
]


@pytest.mark.parametrize(
    ("valid_until", "today", "expected"),
    [
        pytest.param(m("2025-03"), D(2025, 3, 31), False, id="within"),
        pytest.param(m("2025-03"), D(2025, 4, 1), True, id="past"),
        pytest.param(None, D(2023, 3, 31), False, id="new-car-awaiting-first-mark"),
        pytest.param(None, D(2023, 4, 1), True, id="no-validity-past-first-due"),
    ],
)
def test_overdue(valid_until: int | None, today: dt.date, expected: bool) -> None:
    assert rules.overdue(SMALL_2021, valid_until, today) is expected


@pytest.mark.parametrize(("facts", "valid_until", "today", "expected"), OVERDUE)
def test_overdue_cycles(facts: VehicleFacts, valid_until: int | None, today: dt.date, expected: int) -> None:
    assert rules.overdue_cycles(facts, valid_until, today) == expected


@pytest.mark.parametrize(
    ("cycles", "expected"),
    [
        pytest.param(0, False, id="0"),
        pytest.param(1, False, id="1"),
        pytest.param(2, False, id="2"),
        pytest.param(3, True, id="3"),
        pytest.param(4, True, id="4"),
    ],
)
def test_scrapping_due(cycles: int, expected: bool) -> None:
    assert rules.scrapping_due(cycles) is expected


def test_time_travel_last_day_then_next_day() -> None:
    # Valid until 2025-03: within validity through 31 March, overdue on 1 April; the scrapping
    # flag appears once three whole cycles have passed without a mark (2025-04 .. 2031-03).
    facts, until = SMALL_2021, m("2025-03")
    assert rules.within_validity(until, D(2025, 3, 31))
    assert not rules.overdue(facts, until, D(2025, 3, 31))
    assert not rules.within_validity(until, D(2025, 4, 1))
    assert rules.overdue(facts, until, D(2025, 4, 1))
    assert not rules.scrapping_due(rules.overdue_cycles(facts, until, D(2031, 3, 31)))
    assert rules.scrapping_due(rules.overdue_cycles(facts, until, D(2031, 4, 1)))
    with pytest.raises(RuleViolation) as excinfo:
        rules.new_valid_until(facts, IssueReason.REDOWNLOAD, until, D(2025, 4, 1))
    assert excinfo.value.reason == "INSPECTION_OVERDUE"
    assert rules.new_valid_until(facts, IssueReason.REDOWNLOAD, until, D(2025, 3, 31)) == until


# ---------------------------------------------------------------------------------------------
# new_valid_until: R1 blocked statuses


BLOCKED = [
    pytest.param("B", ["B 转出"], id="B"),
    pytest.param("C", ["C 被盗抢"], id="C"),
    pytest.param("E", ["E 注销"], id="E"),
    pytest.param("M", ["M 强制注销"], id="M"),
    pytest.param("P", ["P 达到报废标准公告牌证作废"], id="P"),
    pytest.param("CG", ["C 被盗抢"], id="C-with-G"),
    pytest.param("BE", ["B 转出", "E 注销"], id="B-and-E"),
]


@pytest.mark.parametrize("reason", list(IssueReason), ids=lambda r: r.label)
@pytest.mark.parametrize(("status", "named"), BLOCKED)
def test_blocked_status_forbids_every_reason(status: str, named: list[str], reason: IssueReason) -> None:
    facts = car("2021-03-08", status=status)
    with pytest.raises(RuleViolation) as excinfo:
        rules.new_valid_until(facts, reason, m("2025-03"), D(2025, 2, 1), D(2025, 2, 1))
    code, message = refusal(excinfo)
    assert code == "VEHICLE_STATUS_FORBIDS_ISSUE"
    # The issuer is told what to tell the owner, never the letters (police information).
    assert "vehicle administration office" in message
    for name in named:
        assert name not in message and name.split()[1] not in message


@pytest.mark.parametrize("status", ["D", "H", "J", "K", "L", "N", "O", "G", "I", "DHJKLNO"])
def test_other_statuses_allow_redownload(status: str) -> None:
    facts = car("2021-03-08", status=status)
    assert rules.new_valid_until(facts, IssueReason.REDOWNLOAD, m("2025-03"), D(2025, 2, 1)) == m("2025-03")


# ---------------------------------------------------------------------------------------------
# R2 registration, R3 re-issue


@pytest.mark.parametrize(
    ("facts", "current", "expected"),
    [
        pytest.param(car("2024-06-10"), None, m("2026-06"), id="small-first-due"),
        pytest.param(car("2024-06-10", Cat.COMMERCIAL_PASSENGER), None, m("2025-06"), id="commercial-first-due"),
        pytest.param(car("2024-06-10"), m("2027-01"), m("2027-01"), id="keeps-later-validity"),
        pytest.param(car("2024-06-10"), m("2024-01"), m("2026-06"), id="ignores-earlier-validity"),
    ],
)
def test_registration(facts: VehicleFacts, current: int | None, expected: int) -> None:
    assert rules.new_valid_until(facts, IssueReason.REGISTRATION, current, D(2024, 6, 10)) == expected


def test_registration_of_a_vehicle_past_its_first_due_is_refused() -> None:
    # Registered 2015-03: its first due month (2017-03) ended long ago; it must be inspected.
    with pytest.raises(RuleViolation) as refused:
        rules.new_valid_until(car("2015-03-01"), IssueReason.REGISTRATION, None, D(2026, 11, 25))
    assert refused.value.reason == "INSPECTION_OVERDUE" and "2017-03" in refused.value.message


def test_exemption_without_recorded_validity_is_judged_at_the_first_due() -> None:
    # Registered 2024-12, imported without validity: its first due (2026-12, age 2) is exempt and
    # the window opened on 2026-10-01; the next grid due is 2028-12.
    assert rules.new_valid_until(car("2024-12-03"), IssueReason.EXEMPTION, None, D(2026, 11, 25)) == m("2028-12")


REISSUE = [IssueReason.TRANSFER, IssueReason.CHANGE, IssueReason.REDOWNLOAD, IssueReason.PAPER_LOST]


@pytest.mark.parametrize("reason", REISSUE, ids=lambda r: r.label)
@pytest.mark.parametrize(
    ("current", "today", "expected"),
    [
        pytest.param(m("2027-06"), D(2026, 1, 1), m("2027-06"), id="well-within"),
        pytest.param(m("2027-06"), D(2027, 6, 30), m("2027-06"), id="last-day"),
        pytest.param(m("2027-06"), D(2027, 7, 1), "INSPECTION_OVERDUE", id="overdue"),
        # No recorded validity: the implicit first one (first due 2023-06), as Lookup shows it.
        pytest.param(None, D(2023, 1, 1), m("2023-06"), id="implicit-first-validity"),
        pytest.param(None, D(2026, 1, 1), "INSPECTION_OVERDUE", id="implicit-first-validity-ended"),
    ],
)
def test_reissue_keeps_validity(reason: IssueReason, current: int | None, today: dt.date, expected: int | str) -> None:
    facts = car("2021-06-08")
    if isinstance(expected, str):
        with pytest.raises(RuleViolation) as excinfo:
            rules.new_valid_until(facts, reason, current, today)
        assert excinfo.value.reason == expected
    else:
        assert rules.new_valid_until(facts, reason, current, today) == expected


# ---------------------------------------------------------------------------------------------
# R4 passed inspection


INSPECTION = [
    # small passenger 2021-03, valid until 2025-03: window opens 2025-01-01
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 1, 1), m("2027-03"), id="first-day-of-window"),
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 3, 31), m("2027-03"), id="last-day-of-validity"),
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 8, 15), m("2027-03"), id="late-does-not-shift-grid"),
    pytest.param(SMALL_2021, m("2025-03"), D(2027, 5, 10), m("2029-03"), id="very-late-next-grid-due"),
    # no validity: the next grid due after the inspection month
    pytest.param(SMALL_2021, None, D(2023, 5, 2), m("2025-03"), id="no-validity"),
    pytest.param(SMALL_2021, None, D(2023, 1, 5), m("2025-03"), id="no-validity-window-of-first-due"),
    # 6-month steps: commercial 2019-04 valid until 2024-04 -> 2024-10
    pytest.param(COMMERCIAL_2019, m("2024-04"), D(2024, 3, 10), m("2024-10"), id="commercial-6-months"),
    # 2016-05 car: the 2022-05 due is pre-reform (12) -> 2023-05; the 2023-05 due is reform (24) -> 2025-05
    pytest.param(car("2016-05-20"), m("2022-05"), D(2022, 4, 20), m("2023-05"), id="pre-reform-step"),
    pytest.param(car("2016-05-20"), m("2023-05"), D(2023, 4, 20), m("2025-05"), id="reform-step"),
    # a van at its age-2 due still gets the plain grid (lane test is what it did)
    pytest.param(car("2021-03-08", Cat.SMALL_VAN), m("2023-03"), D(2023, 2, 1), m("2025-03"), id="van"),
]


@pytest.mark.parametrize(("facts", "current", "inspected_on", "expected"), INSPECTION)
def test_inspection_passed(facts: VehicleFacts, current: int | None, inspected_on: dt.date, expected: int) -> None:
    today = inspected_on + dt.timedelta(days=2)  # the record may arrive a little later
    assert rules.new_valid_until(facts, IssueReason.INSPECTION_PASSED, current, today, inspected_on) == expected


def test_inspection_too_early_names_window_opening() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        rules.new_valid_until(SMALL_2021, IssueReason.INSPECTION_PASSED, m("2025-03"), D(2025, 1, 1), D(2024, 12, 31))
    code, message = refusal(excinfo)
    assert code == "TOO_EARLY"
    assert "2025-01-01" in message


@pytest.mark.parametrize("status", ["G", "I", "GI", "GHK"])
@pytest.mark.parametrize("reason", [IssueReason.INSPECTION_PASSED, IssueReason.EXEMPTION], ids=lambda r: r.label)
def test_unprocessed_violation_or_accident(status: str, reason: IssueReason) -> None:
    facts = car("2021-03-08", status=status)
    with pytest.raises(RuleViolation) as excinfo:
        rules.new_valid_until(facts, reason, m("2025-03"), D(2025, 2, 1), D(2025, 2, 1))
    code, message = refusal(excinfo)
    assert code == "UNPROCESSED_VIOLATION_OR_ACCIDENT"
    assert "vehicle administration office" in message and "status" not in message


@pytest.mark.parametrize(
    ("inspected_on", "today"),
    [
        pytest.param(None, D(2025, 2, 1), id="missing"),
        pytest.param(D(2025, 2, 2), D(2025, 2, 1), id="after-today"),
        pytest.param(D(2021, 3, 7), D(2025, 2, 1), id="before-registration"),
    ],
)
def test_inspection_date_invalid(inspected_on: dt.date | None, today: dt.date) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        rules.new_valid_until(SMALL_2021, IssueReason.INSPECTION_PASSED, m("2025-03"), today, inspected_on)
    assert excinfo.value.field == "inspected_on"


# ---------------------------------------------------------------------------------------------
# R5 exemption application


EXEMPT_OK = [
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 2, 10), rules.DEFAULT_CONFIG, m("2027-03"), id="age-4-in-window"),
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 1, 1), rules.DEFAULT_CONFIG, m("2027-03"), id="first-day"),
    # overdue since 2025-03 (age 4): the due the application falls after is still 2025-03
    pytest.param(SMALL_2021, m("2025-03"), D(2025, 6, 1), rules.DEFAULT_CONFIG, m("2027-03"), id="overdue-age-4"),
    # overdue since 2027-03; applying in 2029-04 satisfies the 2029-03 due (age 8, exempt)
    pytest.param(SMALL_2021, m("2027-03"), D(2029, 4, 1), rules.DEFAULT_CONFIG, m("2031-03"), id="overdue-age-8"),
    pytest.param(SMALL_2021, m("2029-03"), D(2029, 2, 1), rules.DEFAULT_CONFIG, m("2031-03"), id="age-8"),
    pytest.param(
        car("2020-06-30", Cat.MOTORCYCLE),
        m("2022-06"),
        D(2022, 5, 1),
        MOTO_6,
        m("2024-06"),
        id="moto-6-age-2",
    ),
]


@pytest.mark.parametrize(("facts", "current", "today", "config", "expected"), EXEMPT_OK)
def test_exemption_issued(
    facts: VehicleFacts, current: int | None, today: dt.date, config: RuleConfig, expected: int
) -> None:
    assert rules.new_valid_until(facts, IssueReason.EXEMPTION, current, today, None, config) == expected


EXEMPT_REFUSED = [
    pytest.param(SMALL_2021, m("2027-03"), D(2027, 2, 1), rules.DEFAULT_CONFIG, "NOT_EXEMPT", "lane test", id="age-6"),
    pytest.param(SMALL_2021, m("2025-03"), D(2027, 4, 1), rules.DEFAULT_CONFIG, "NOT_EXEMPT", "age 6", id="overdue-6"),
    pytest.param(
        car("2021-03-08", Cat.SMALL_VAN),
        m("2023-03"),
        D(2023, 2, 1),
        rules.DEFAULT_CONFIG,
        "NOT_EXEMPT",
        "van",
        id="van",
    ),
    pytest.param(
        car("2021-03-08", lost=True),
        m("2023-03"),
        D(2023, 2, 1),
        rules.DEFAULT_CONFIG,
        "NOT_EXEMPT",
        "lost",
        id="lost",
    ),
    pytest.param(
        car("2018-01-05", seats=7),
        m("2020-01"),
        D(2019, 12, 1),
        rules.DEFAULT_CONFIG,
        "NOT_EXEMPT",
        "7 seats",
        id="pre-reform-7-seats",
    ),
    pytest.param(
        car("2016-05-20"),
        m("2025-05"),
        D(2025, 4, 1),
        rules.DEFAULT_CONFIG,
        "NOT_EXEMPT",
        "age 9",
        id="reform-age-9",
    ),
    pytest.param(
        car("2020-06-30", Cat.MOTORCYCLE),
        m("2022-06"),
        D(2022, 5, 1),
        rules.DEFAULT_CONFIG,
        "NOT_EXEMPT",
        "motorcycle",
        id="moto-default-off",
    ),
    pytest.param(
        car("2021-03-08", Cat.GOODS),
        m("2022-03"),
        D(2022, 2, 1),
        rules.DEFAULT_CONFIG,
        "NOT_EXEMPT",
        "goods",
        id="goods",
    ),
    pytest.param(
        SMALL_2021, m("2025-03"), D(2024, 12, 31), rules.DEFAULT_CONFIG, "TOO_EARLY", "2025-01-01", id="early"
    ),
    # not exempt beats too early: waiting would not help
    pytest.param(SMALL_2021, m("2027-03"), D(2026, 6, 1), rules.DEFAULT_CONFIG, "NOT_EXEMPT", "age 6", id="early-6"),
]


@pytest.mark.parametrize(("facts", "current", "today", "config", "code", "says"), EXEMPT_REFUSED)
def test_exemption_refused(
    facts: VehicleFacts, current: int | None, today: dt.date, config: RuleConfig, code: str, says: str
) -> None:
    with pytest.raises(RuleViolation) as excinfo:
        rules.new_valid_until(facts, IssueReason.EXEMPTION, current, today, None, config)
    assert refusal(excinfo)[0] == code
    assert says in refusal(excinfo)[1]


def test_rule_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RuleConfig(window_months=0)
    with pytest.raises(ValueError):
        RuleConfig(motorcycle_exempt_years=-1)
