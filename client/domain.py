"""The vocabulary of the field, shared by server and client: status codes, plates, months.

Everything here is pure data and pure functions; the server's rules engine builds on it.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from vimark.client.errors import InvalidArgument


@dataclass(frozen=True)
class StatusCode:
    """One vehicle status letter (机动车状态) and vimark's default policy for it."""

    code: str
    name_zh: str
    name_en: str
    blocks_road: bool = False  # Verify answers VEHICLE_BLOCKED whatever the mark says
    blocks_issue: bool = False  # no new mark for any reason
    blocks_inspection_issue: bool = False  # no mark after inspection/exemption until cleared
    police_alert: bool = False  # the terminal raises an alert


# The one policy table (domain.md). Q is derived from the valid-until month, never stored.
STATUS_CODES: dict[str, StatusCode] = {
    s.code: s
    for s in (
        StatusCode("A", "正常", "normal"),
        StatusCode("B", "转出", "registration transferred out", blocks_issue=True),
        StatusCode("C", "被盗抢", "stolen or robbed", blocks_road=True, blocks_issue=True, police_alert=True),
        StatusCode("D", "停驶", "suspended from use", blocks_road=True),
        StatusCode("E", "注销", "registration cancelled", blocks_road=True, blocks_issue=True),
        StatusCode("G", "违法未处理", "unprocessed traffic violation", blocks_inspection_issue=True),
        StatusCode("H", "海关监管", "under customs supervision"),
        StatusCode("I", "事故未处理", "unprocessed accident", blocks_inspection_issue=True),
        StatusCode("J", "嫌疑车", "suspect vehicle", police_alert=True),
        StatusCode("K", "查封", "sealed by a court"),
        StatusCode("L", "暂扣", "detained", police_alert=True),
        StatusCode("M", "强制注销", "compulsorily cancelled", blocks_road=True, blocks_issue=True),
        StatusCode("N", "事故逃逸", "hit-and-run", police_alert=True),
        StatusCode("O", "锁定", "locked"),
        StatusCode(
            "P", "达到报废标准公告牌证作废", "scrapped, plates and papers void", blocks_road=True, blocks_issue=True
        ),
        StatusCode("Q", "逾期未检验", "inspection overdue"),
    )
}
STORED_STATUS_LETTERS = "ABCDEGHIJKLMNOP"  # every letter but the derived Q


def status_bits(letters: str) -> int:
    """A status set as a bit mask (bit i = STORED_STATUS_LETTERS[i]); "A" and "" are 0."""
    bits = 0
    for letter in letters:
        position = STORED_STATUS_LETTERS.find(letter)
        if position < 0:
            raise InvalidArgument("status_codes", f"unknown status letter {letter!r}")
        if letter != "A":
            bits |= 1 << position
    return bits


@functools.lru_cache(maxsize=4096)  # a few hundred distinct sets in practice; called on every verification
def status_letters(bits: int) -> str:
    """The inverse of status_bits: "A" for a normal vehicle, else the letters in table order."""
    letters = "".join(c for i, c in enumerate(STORED_STATUS_LETTERS) if bits >> i & 1)
    return letters or "A"


def _mask(flag: str) -> int:
    return status_bits("".join(c for c in STORED_STATUS_LETTERS if getattr(STATUS_CODES[c], flag)))


BLOCKS_ROAD_MASK = _mask("blocks_road")
BLOCKS_ISSUE_MASK = _mask("blocks_issue")
BLOCKS_INSPECTION_ISSUE_MASK = _mask("blocks_inspection_issue")
POLICE_ALERT_MASK = _mask("police_alert")


class VehicleCategory(enum.Enum):
    """The names vimark uses for vehicle categories (domain.md)."""

    COMMERCIAL_PASSENGER = "commercial_passenger"
    GOODS = "goods"
    LARGE_PASSENGER = "large_passenger"
    SMALL_PASSENGER = "small_passenger"
    SMALL_VAN = "small_van"
    MOTORCYCLE = "motorcycle"
    OTHER = "other"

    @classmethod
    def parse(cls, text: str) -> VehicleCategory:
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(c.value for c in cls)
            raise InvalidArgument("category", f"unknown category {text!r} (one of {names})") from None


# Plate type codes (GA 24.7) that vimark accepts.
PLATE_TYPES: dict[str, str] = {
    "01": "大型汽车 large vehicle",
    "02": "小型汽车 small vehicle",
    "03": "使馆汽车 embassy car",
    "04": "领馆汽车 consulate car",
    "05": "境外汽车 foreign car",
    "06": "外籍汽车 foreign-registered car",
    "07": "普通摩托车 motorcycle",
    "08": "轻便摩托车 light motorcycle",
    "13": "低速车 low-speed vehicle",
    "14": "拖拉机 tractor",
    "15": "挂车 trailer",
    "16": "教练汽车 coach car",
    "20": "临时入境汽车 temporary entry car",
    "21": "临时入境摩托车 temporary entry motorcycle",
    "22": "临时行驶车 temporary driving vehicle",
    "23": "警用汽车 police car",
    "24": "警用摩托 police motorcycle",
    "26": "香港入出境车 Hong Kong cross-border",
    "27": "澳门入出境车 Macao cross-border",
    "51": "大型新能源汽车 large new-energy vehicle",
    "52": "小型新能源汽车 small new-energy vehicle",
    "99": "其他号牌 other",
}


PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_L = "A-HJ-NP-Z"  # letters without I and O
_SUFFIXES = "挂学警港澳"  # the last of an ordinary plate's 5 characters may be one of these
_ENERGY = "DABCEFGHJK"  # a new-energy plate's energy letter: D,A,B,C,E pure electric; F,G,H,J,K other
_ORDINARY = re.compile(rf"[{PROVINCES}][A-Z][{_L}0-9]{{4}}[{_L}0-9{_SUFFIXES}]")
_NEV_SMALL = re.compile(rf"[{PROVINCES}][A-Z][{_ENERGY}][{_L}0-9][0-9]{{4}}")
_NEV_LARGE = re.compile(rf"[{PROVINCES}][A-Z][0-9]{{5}}[{_ENERGY}]")
_EMBASSY = re.compile(r"使[0-9]{6}|[0-9]{6}使")
_CONSULATE = re.compile(rf"[{PROVINCES}][A-Z][{_L}0-9]{{4}}领")  # e.g. 沪A1234领; no 6 digits + 领 shape exists
_PLATE_SHAPES = (_ORDINARY, _NEV_SMALL, _NEV_LARGE, _EMBASSY, _CONSULATE)
_VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")

# How plate input is read: vimark's choice, one pair of functions for every entry point (CLI flags,
# the CSV import, every RPC field). What they return is the canonical form, the one stored and
# signed, so the same car typed three ways is one vehicle.
# 1. Unicode NFKC, so the full-width forms a Chinese input method types in its full-width mode
#    (Ａ, ０, the ideographic space U+3000) become ASCII. NFKC leaves the CJK characters of a plate
#    (the provinces, 挂学警港澳使领) as they are; tests/test_plates.py checks that.
# 2. Whitespace and the middle dot printed after the authority letter (京A·12345) are dropped:
#    U+00B7 as Chinese input methods type it, U+30FB as Japanese ones and CJK fonts have it (NFKC
#    turns the half-width U+FF65 into it), and the bullets U+2022 and U+2219 that phone symbol pads
#    and copied text offer in its place. They are dropped, never mapped to a character, so no two
#    plates can be read as one.
# 3. a-z are read as A-Z (ASCII only: str.upper would turn ß into SS).
# 4. Plate types: NFKC, spaces around the code dropped, and a single digit is the code with its
#    leading zero left off (2 is 02).
# The result must then match GA 36-2018 / GA 24.7 exactly. A signed certificate body is never read
# through here: its plate was canonical when signed, and the certificate decoder (certificate.py)
# takes its plate as it is and its plate type only as one of PLATE_TYPES.
_PLATE_SEPARATORS = frozenset("\u00b7\u30fb\u2022\u2219")
_ASCII_DIGITS = "0123456789"
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MAX_PLATE_INPUT = 64  # a plate is at most 9 characters; longer input is refused before NFKC


def parse_plate_type(code: str) -> str:
    """A plate type code as typed (" 2", "０２", "02") -> its two-digit GA 24.7 form ("02")."""
    if code in PLATE_TYPES:  # already in its form (NFKC keeps ASCII digits)
        return code
    text = unicodedata.normalize("NFKC", code).strip()  # spaces around it only: "1 3" is no code
    if not text:
        raise InvalidArgument("plate_type", "required: the GA 24.7 plate type code, e.g. 02")
    if len(text) == 1 and text in _ASCII_DIGITS:
        text = "0" + text
    if text not in PLATE_TYPES:
        raise InvalidArgument("plate_type", f"unknown plate type code {_shown(code)}: one of {', '.join(PLATE_TYPES)}")
    return text


def parse_plate_number(text: str) -> str:
    """A plate number as typed (京a·12345, 京Ａ１２３４５) -> its canonical form (京A12345).

    A refusal names the GA 36-2018 rule the input breaks.
    """
    if len(text) > _MAX_PLATE_INPUT:
        raise InvalidArgument("plate_number", f"{_shown(text)} is too long for a plate (at most 9 characters)")
    if _has_plate_shape(text):  # canonical already: steps 1-3 keep every character a shape admits
        return text
    plate = _canonical_plate_text(text)
    if _has_plate_shape(plate):
        return plate
    shown = _shown(text) if plate == text else f"{_shown(text)} (read as {_shown(plate)})"
    raise InvalidArgument("plate_number", f"{shown}: {_plate_rule_broken(plate)}")


def _has_plate_shape(plate: str) -> bool:
    return any(shape.fullmatch(plate) for shape in _PLATE_SHAPES)


def _canonical_plate_text(text: str) -> str:
    """Steps 1-3 above, before any shape is checked."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if not c.isspace() and c not in _PLATE_SEPARATORS).translate(_ASCII_UPPER)


def _plate_rule_broken(plate: str) -> str:
    """In words, the first GA 36 rule broken by a canonical text that matched no plate shape."""
    if not plate:
        return "required: a plate number such as 闽C12345"
    if "使" in plate:
        return "an embassy plate is 使 and 6 digits, 使 first or last (使123456 or 123456使)"
    if plate[0] not in PROVINCES:
        return "a plate starts with a province abbreviation such as 京 or 闽 (or is an embassy plate, 使123456)"
    if len(plate) < 2 or not "A" <= plate[1] <= "Z":
        return "the province is followed by the issuing-authority letter A–Z, e.g. the C of 闽C12345"
    rest = plate[2:]
    suffix = rest[-1] if rest and rest[-1] in _SUFFIXES + "领" else ""
    for c in rest[: len(rest) - len(suffix)]:
        if c in "IO":
            digit = "0" if c == "O" else "1"
            return (
                "letters must be A–Z without I and O (lower case is accepted and read as upper case):"
                f" {c!r} (the digit {digit}?)"
            )
        if c in _SUFFIXES + "领":
            return f"{c} may only be the last character of a plate"
        if not ("A" <= c <= "Z" or c in _ASCII_DIGITS):
            code_point = "" if c.isascii() else f" (U+{ord(c):04X})"
            return f"{c!r}{code_point} is not a plate character: digits 0–9 and letters A–Z without I and O"
    n = len(rest)
    if suffix == "领":
        return f"a consulate plate has 4 characters between the authority letter and 领; this one has {n - 1}"
    if suffix:
        return f"an ordinary plate has 5 characters after the authority letter, {suffix} the last; this one has {n}"
    if n != 6:
        return (
            f"an ordinary plate has 5 characters after the authority letter, new-energy plates have 6; this one has {n}"
        )
    return (
        f"new-energy plates have 6 characters after the authority letter: an energy letter ({', '.join(_ENERGY)})"
        " then a letter or digit and 4 digits (闽CD12345), or 5 digits then an energy letter (闽C12345D)"
    )


def _shown(text: str) -> str:
    """Input quoted in a message, shortened when long: a message stays one readable line."""
    return repr(text) if len(text) <= 32 else f"{text[:16]!r}… ({len(text)} characters)"


def parse_vin(text: str) -> str:
    if not _VIN.fullmatch(text):
        raise InvalidArgument("vin", f"{text!r} is not a VIN (17 characters, digits and letters without I, O, Q)")
    return text


# A calendar month as one int (year * 12 + month - 1): compact in the index and on the wire.
Month = int


def month_of(day: dt.date) -> Month:
    return day.year * 12 + day.month - 1


def month_start(month: Month) -> dt.date:
    return dt.date(month // 12, month % 12 + 1, 1)


@functools.lru_cache(maxsize=4096)  # months 1950-2199 are 3,000; called on every verification
def month_end(month: Month) -> dt.date:
    """The last day of the month: a mark "valid until 2027-06" is valid through 30 June 2027."""
    return month_start(month + 1) - dt.timedelta(days=1)


def format_month(month: Month) -> str:
    return f"{month // 12:04d}-{month % 12 + 1:02d}"


# Dates and months vimark accepts: wide enough for any vehicle on the road, narrow enough that
# every month fits the index's 16-bit column and every grid computation stays within dt.date.
FIRST_YEAR, LAST_YEAR = 1950, 2199


def parse_month(text: str, field: str = "valid_until") -> Month:
    match = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if not match or not 1 <= int(match[2]) <= 12:
        raise InvalidArgument(field, f"{text!r} is not a month (YYYY-MM)")
    _check_year(int(match[1]), text, field)
    return int(match[1]) * 12 + int(match[2]) - 1


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(text: str, field: str) -> dt.date:
    try:
        # fromisoformat alone would also take ISO week dates such as 2026-W48-3.
        day = dt.date.fromisoformat(text) if _ISO_DAY.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None:
        raise InvalidArgument(field, f"{text!r} is not a date (YYYY-MM-DD)")
    _check_year(day.year, text, field)
    return day


def _check_year(year: int, text: str, field: str) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidArgument(field, f"{text!r} is outside {FIRST_YEAR}-{LAST_YEAR}")


# Inspection months are calendar months in China Standard Time (UTC+8, no daylight saving).
CHINA_TIME = dt.timezone(dt.timedelta(hours=8), "CST")
Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def china_date(instant: dt.datetime) -> dt.date:
    """The calendar date in China at `instant`: the day validity is judged on."""
    return instant.astimezone(CHINA_TIME).date()
