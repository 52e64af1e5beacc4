"""The rules engine: inspection grid, exemption, the window before a due date, overdue cycles, and
the valid-until month of a new mark.

Pure functions: no I/O, no clock. The date that validity is judged on is always passed in
(`today`, a calendar date in China). Rule numbers in comments (R1..R8) let a reviewer check each
step against docs/domain.md ("Vehicle status codes" and "Inspection cycles"):

  R1 statuses that forbid any new mark        R5 exemption application
  R2 registration                             R6 who is exempt from the lane test, and when
  R3 re-issue within validity                 R7 intervals (Art. 16 and the 2022 reform)
  R4 passed lane inspection                   R8 overdue cycles and compulsory scrapping
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import assert_never

from vimark.client.domain import (
    BLOCKS_INSPECTION_ISSUE_MASK,
    BLOCKS_ISSUE_MASK,
    Month,
    VehicleCategory,
    format_month,
    month_end,
    month_of,
    month_start,
)
from vimark.client.errors import InvalidArgument, RuleViolation
from vimark.v1.certificate_pb2 import IssueReason as _Reason

# Exemption from the lane test began on 2014-09-01; the four-ministry reform took effect on
# 2022-10-01. "The rule set in force on a due date decides": compared with the due month's first day.
EXEMPTION_BEGAN = dt.date(2014, 9, 1)
REFORM_2022 = dt.date(2022, 10, 1)
# Compulsory Scrapping Standard (2012) Art. 4: no valid mark for 3 consecutive inspection cycles.
SCRAPPING_CYCLES = 3


@dataclass(frozen=True)
class RuleConfig:
    """The rules vimark treats as configurable rather than settled by regulation."""

    # Motorcycles are only *reportedly* exempt within 6 years (one secondary source), so the
    # exemption is off by default: 0 = never exempt; 6 = exempt at due dates before age 6.
    motorcycle_exempt_years: int = 0
    # A mark may be granted in the last `window_months` calendar months of the current validity.
    window_months: int = 3

    def __post_init__(self) -> None:
        if self.motorcycle_exempt_years < 0:
            raise ValueError(f"motorcycle_exempt_years must be >= 0, not {self.motorcycle_exempt_years}")
        if self.window_months < 1:
            raise ValueError(f"window_months must be >= 1, not {self.window_months}")


# A module constant rather than `RuleConfig()` in each signature: one shared immutable default.
DEFAULT_CONFIG = RuleConfig()


@dataclass(frozen=True)
class VehicleFacts:
    """What the rules need to know about a vehicle."""

    category: VehicleCategory
    registered_on: dt.date
    seats: int | None  # None = unknown
    exemption_lost: bool
    status_bits: int  # vimark.client.domain.status_bits(...) of the stored letters

    @property
    def registration_month(self) -> Month:
        """D0 of the inspection grid: cycles are counted from the month of first registration."""
        return month_of(self.registered_on)


class IssueReason(enum.IntEnum):
    """The proto's IssueReason (certificate.proto) under the short names the rules use; the
    values are the proto's, so a wire value converts with IssueReason(value)."""

    REGISTRATION = _Reason.ISSUE_REASON_REGISTRATION
    TRANSFER = _Reason.ISSUE_REASON_TRANSFER
    CHANGE = _Reason.ISSUE_REASON_CHANGE
    INSPECTION_PASSED = _Reason.ISSUE_REASON_INSPECTION_PASSED
    EXEMPTION = _Reason.ISSUE_REASON_EXEMPTION
    REDOWNLOAD = _Reason.ISSUE_REASON_REDOWNLOAD
    PAPER_LOST = _Reason.ISSUE_REASON_PAPER_LOST

    @property
    def label(self) -> str:
        """The name people type: registration, inspection_passed, ..."""
        return self.name.lower()


# ---------------------------------------------------------------------------------------------
# R7 intervals and the grid


def _age_at(facts: VehicleFacts, due: Month) -> int:
    """The vehicle's age in whole years at a due month."""
    return (due - facts.registration_month) // 12


def _reform_in_force(due: Month) -> bool:
    return month_start(due) >= REFORM_2022


def _seats_at_most(seats: int | None, limit: int) -> bool:
    # Unknown seats: assume an ordinary car (at most 5), which passes every seat limit here.
    return seats is None or seats <= limit


def interval_months(facts: VehicleFacts, due: Month, config: RuleConfig = DEFAULT_CONFIG) -> int:
    """R7: the step taken from grid due month `due`, under the rule set in force on that due date
    and the vehicle's age at it. "12 months until age 5" means: a step taken at age < 5."""
    age = _age_at(facts, due)
    match facts.category:
        case VehicleCategory.COMMERCIAL_PASSENGER:
            return 12 if age < 5 else 6
        case VehicleCategory.GOODS | VehicleCategory.LARGE_PASSENGER:
            return 12 if age < 10 else 6
        case VehicleCategory.SMALL_PASSENGER if _reform_in_force(due) and _seats_at_most(facts.seats, 9):
            # 2022 reform: 24 months until age 10, then 12; the 6-month step after 15 is gone.
            # It follows category and seats only: losing the exemption means a lane test at each
            # due date, not a shorter cycle (vimark's reading).
            return 24 if age < 10 else 12
        case VehicleCategory.SMALL_PASSENGER | VehicleCategory.SMALL_VAN:
            # Art. 16 small-passenger cycle; vans keep it after the reform.
            return 24 if age < 6 else 12 if age < 15 else 6
        case VehicleCategory.MOTORCYCLE:
            return 24 if age < 4 else 12
        case VehicleCategory.OTHER:
            return 12
    assert_never(facts.category)


def grid(facts: VehicleFacts, config: RuleConfig = DEFAULT_CONFIG) -> Iterator[Month]:
    """The due months D1, D2, ... (endless). D0, the registration month, is not yielded; each step
    is the interval in force at the due date it is taken from."""
    due = facts.registration_month
    while True:
        due += interval_months(facts, due, config)
        yield due


def first_due(facts: VehicleFacts, config: RuleConfig = DEFAULT_CONFIG) -> Month:
    return next(grid(facts, config))


def next_grid_due_after(facts: VehicleFacts, month: Month, config: RuleConfig = DEFAULT_CONFIG) -> Month:
    """The first grid due month strictly after `month`."""
    for due in grid(facts, config):
        if due > month:
            return due
    raise AssertionError("unreachable: the grid is endless")


def _latest_grid_due_at_or_before(facts: VehicleFacts, month: Month, config: RuleConfig) -> Month:
    """The latest grid due month <= `month`, or the registration month if there is none yet."""
    latest = facts.registration_month
    for due in grid(facts, config):
        if due > month:
            return latest
        latest = due
    raise AssertionError("unreachable: the grid is endless")


# ---------------------------------------------------------------------------------------------
# R6 exemption from the lane test


def _exemption_refusal(facts: VehicleFacts, due: Month, config: RuleConfig) -> str | None:
    """Why the due date `due` cannot be satisfied by an exemption application; None if it can."""
    age = _age_at(facts, due)
    at = f"the due date {format_month(due)} (age {age})"
    # R6.1 the exemption did not exist before 2014-09-01 (domain.md: "from 2014-09-01").
    if month_start(due) < EXEMPTION_BEGAN:
        return f"{at} is before exemption from the lane test began on {EXEMPTION_BEGAN.isoformat()}"
    lost = (
        "the vehicle has lost the exemption (accident with casualties, illegal modification, "
        "converted from commercial use, or registered more than 4 years after manufacture)"
    )
    match facts.category:
        case VehicleCategory.SMALL_PASSENGER:
            # R6.2 before the reform: fewer than 7 seats, years 2 and 4; from the reform: at most
            # 9 seats, years 2, 4 and 8. Either way a vehicle that lost the exemption is tested.
            reform = _reform_in_force(due)
            max_seats, ages = (9, (2, 4, 8)) if reform else (6, (2, 4))
            rule_set = "the 2022 reform" if reform else "the 2014 rules"
            if facts.exemption_lost:
                return lost
            if not _seats_at_most(facts.seats, max_seats):
                return f"{facts.seats} seats: at {at} {rule_set} exempt only cars of at most {max_seats} seats"
            if age not in ages:
                listed = ", ".join(map(str, ages))
                return f"{at} needs a lane test: {rule_set} exempt only at ages {listed}"
            return None
        case VehicleCategory.SMALL_VAN:
            return "a van (面包车) is never exempt from the lane test"
        case VehicleCategory.MOTORCYCLE:
            # R6.3 configurable: exempt at years 2 and 4 while younger than motorcycle_exempt_years.
            # domain.md states the loss of exemption for any vehicle, so it applies here too.
            if config.motorcycle_exempt_years == 0:
                return "motorcycles are not exempt from the lane test (motorcycle_exempt_years = 0)"
            if facts.exemption_lost:
                return lost
            if age not in (2, 4) or age >= config.motorcycle_exempt_years:
                return (
                    f"{at} needs a lane test: motorcycles are exempt only at ages 2 and 4 "
                    f"below age {config.motorcycle_exempt_years}"
                )
            return None
        case (
            VehicleCategory.COMMERCIAL_PASSENGER
            | VehicleCategory.GOODS
            | VehicleCategory.LARGE_PASSENGER
            | VehicleCategory.OTHER
        ):
            return f"a {facts.category.value} vehicle is never exempt from the lane test"
    assert_never(facts.category)


def exemption_eligible(facts: VehicleFacts, due: Month, config: RuleConfig = DEFAULT_CONFIG) -> bool:
    """R6: may the due date `due` be satisfied by an exemption application (no lane test)?"""
    return _exemption_refusal(facts, due, config) is None


# ---------------------------------------------------------------------------------------------
# The window, validity and overdue cycles (R8)


# Art. 16's longest step: small passenger vehicles (until 6, or until 10 since the 2022 reform)
# and motorcycles (until 4).
LONGEST_INTERVAL_MONTHS = 24


def latest_recordable_validity(today: dt.date, config: RuleConfig = DEFAULT_CONFIG) -> Month:
    """No vehicle can truthfully be valid beyond this month today: a validity ends at most
    `window_months` ahead while its renewal is not yet allowed, and a renewal adds at most the
    longest step (vimark's bound, to refuse impossible registry rows such as 2099-12)."""
    return month_of(today) + config.window_months + LONGEST_INTERVAL_MONTHS


def window_opens(valid_until: Month, config: RuleConfig = DEFAULT_CONFIG) -> dt.date:
    """The first day the next mark may be granted: "in the 3 months before the validity ends" is
    read as the last 3 calendar months of it (valid until 2027-06 -> from 2027-04-01)."""
    return month_start(valid_until - (config.window_months - 1))


def within_validity(valid_until: Month | None, today: dt.date) -> bool:
    """Validity is recorded to the month: valid through the last day of `valid_until`."""
    return valid_until is not None and today <= month_end(valid_until)


def overdue(
    facts: VehicleFacts, valid_until: Month | None, today: dt.date, config: RuleConfig = DEFAULT_CONFIG
) -> bool:
    """R8: past the validity (status Q). A vehicle without any validity is overdue once its first
    due month has ended (before that it is newly registered, awaiting its first mark)."""
    if valid_until is None:
        return first_due(facts, config) < month_of(today)
    return not within_validity(valid_until, today)


def overdue_cycles(
    facts: VehicleFacts, valid_until: Month | None, today: dt.date, config: RuleConfig = DEFAULT_CONFIG
) -> int:
    """R8: complete inspection cycles that have passed since the validity ended without a new mark
    (Compulsory Scrapping Standard 2012, Art. 4: "连续3个机动车检验周期内未取得检验合格标志").

    The cycle that starts when the validity ends is the first; it is complete once the next grid
    due month has ended. 0 while within validity and during the first overdue cycle. A vehicle
    with no validity at all counts from its first due month, the end of its implicit first validity.
    """
    if not overdue(facts, valid_until, today, config):
        return 0
    this_month = month_of(today)
    # Whole cycles sit on the grid: an off-grid validity (imported data) ends its partial cycle at
    # the first grid due month at or after it.
    ended = first_due(facts, config) if valid_until is None else next_grid_due_after(facts, valid_until - 1, config)
    cycles = 0
    for due in grid(facts, config):
        if due >= this_month:  # month_end(due) < today  <=>  due < month_of(today)
            return cycles
        if due > ended:
            cycles += 1
    raise AssertionError("unreachable: the grid is endless")


def scrapping_due(cycles: int) -> bool:
    """Compulsory Scrapping Standard (2012) Art. 4: 3 complete consecutive cycles without a valid mark."""
    return cycles >= SCRAPPING_CYCLES


# ---------------------------------------------------------------------------------------------
# The valid-until month of a new mark


def _renew(facts: VehicleFacts, current: Month | None, on: dt.date, exemption: bool, config: RuleConfig) -> Month:
    """R4/R5: a new cycle, after a lane inspection on `on` or an exemption application made `on`."""
    # R4.1 no mark after an inspection or exemption while a violation (G) or accident (I) is open.
    if facts.status_bits & BLOCKS_INSPECTION_ISSUE_MASK:
        raise RuleViolation(
            "an unprocessed traffic violation or accident must be cleared before a mark can be issued: "
            "refer the owner to the vehicle administration office",
            reason="UNPROCESSED_VIOLATION_OR_ACCIDENT",
        )
    month = month_of(on)
    # R4.2 the due date being satisfied: the current valid-until month if `on` is not past it;
    # for an overdue vehicle, or one with no validity, the latest grid due month <= `on`'s month
    # (the registration month if none).
    if current is not None and current >= month:
        due = current
    else:
        due = _latest_grid_due_at_or_before(facts, month, config)
    # R5.1 an exemption application must satisfy a due date that is exempt from the lane test.
    # Checked before the window: waiting would not help, so say so first.
    if exemption:
        why = _exemption_refusal(facts, due, config)
        if why is not None:
            raise RuleViolation(f"no exemption: {why}", reason="NOT_EXEMPT")
    # R4.3 not before the window before the current validity ends.
    if current is not None and on < window_opens(current, config):
        raise RuleViolation(
            f"too early: valid until {format_month(current)}; the window for the next mark opens on "
            f"{window_opens(current, config).isoformat()}",
            reason="TOO_EARLY",
        )
    # R4.4 late inspection does not shift the grid (vimark's reading): the new validity runs to the
    # first grid due month after the later of the current due date and the month of `on`.
    return next_grid_due_after(facts, max(due, month), config)


def _implicit(facts: VehicleFacts, current: Month | None, config: RuleConfig) -> Month:
    """A vehicle with no recorded validity (imported without one) is taken as valid until its
    first due month, as if its registration mark had been issued: the first inspection or
    exemption then satisfies that due month, with its window."""
    return first_due(facts, config) if current is None else current


# Re-issues carry the current validity unchanged (R3). Copies are the current mark itself, given
# again: they never supersede it (only a grant makes a new current mark).
REISSUE_REASONS = frozenset({IssueReason.TRANSFER, IssueReason.CHANGE, IssueReason.REDOWNLOAD, IssueReason.PAPER_LOST})
COPY_REASONS = frozenset({IssueReason.REDOWNLOAD, IssueReason.PAPER_LOST})


def new_valid_until(
    facts: VehicleFacts,
    reason: IssueReason,
    current_valid_until: Month | None,
    today: dt.date,
    inspected_on: dt.date | None = None,
    config: RuleConfig = DEFAULT_CONFIG,
) -> Month:
    """The valid-until month of a new mark for `reason`, or RuleViolation where the rules forbid it."""
    current = current_valid_until
    # R1 B, C, E, M, P: no new mark for any reason.
    if facts.status_bits & BLOCKS_ISSUE_MASK:
        # The letters are police information: the issuer learns what to tell the owner, not why.
        raise RuleViolation(
            "the vehicle's status forbids a new mark: refer the owner to the vehicle administration office",
            reason="VEHICLE_STATUS_FORBIDS_ISSUE",
        )
    match reason:
        case IssueReason.REGISTRATION:
            # R2 valid until the first due date; a later validity already held is kept. A vehicle
            # registered so long ago that this has already ended must be inspected instead.
            first = first_due(facts, config)
            valid_until = first if current is None else max(first, current)
            if not within_validity(valid_until, today):
                raise RuleViolation(
                    f"the first inspection was due by the end of {format_month(valid_until)}: inspect the vehicle",
                    reason="INSPECTION_OVERDUE",
                )
            return valid_until
        case IssueReason.TRANSFER | IssueReason.CHANGE | IssueReason.REDOWNLOAD | IssueReason.PAPER_LOST:
            # R3 the same validity on a new mark (a lost paper mark is just downloaded again); an
            # overdue vehicle must be inspected first. A vehicle imported with no recorded validity
            # holds its implicit first one (as Lookup says), so a copy carries that.
            current = _implicit(facts, current, config)
            if not within_validity(current, today):
                raise RuleViolation(
                    f"inspection overdue since the end of {format_month(current)}: inspect the vehicle first",
                    reason="INSPECTION_OVERDUE",
                )
            return current
        case IssueReason.INSPECTION_PASSED:
            # R4 the inspection date is the station's, and cannot be in the future.
            if inspected_on is None:
                raise InvalidArgument("inspected_on", "required for a mark after a passed inspection")
            if inspected_on > today:
                raise InvalidArgument("inspected_on", f"{inspected_on.isoformat()} is after today")
            if inspected_on < facts.registered_on:
                raise InvalidArgument(
                    "inspected_on",
                    f"{inspected_on.isoformat()} is before registration on {facts.registered_on}",
                )
            return _renew(facts, _implicit(facts, current, config), inspected_on, False, config)
        case IssueReason.EXEMPTION:
            # R5 like R4, with the application date (today) in place of the inspection date.
            return _renew(facts, _implicit(facts, current, config), today, True, config)
    assert_never(reason)
