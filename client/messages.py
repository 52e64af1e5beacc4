"""What vimark says to people, in Chinese and English: one catalogue, not strings scattered in code.

The people who read vimark's answers are police officers, station staff and car owners in China:
Chinese is the first language of every entry, English the second. A command picks the language
from `--lang`, else VIMARK_LANG, else the locale (LC_ALL, LC_MESSAGES, LANG: zh_* is Chinese);
a server explains verdicts in the language a call asks for in its `accept-language` metadata
(English when it asks for none, so the API's text is stable for programs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ZH, EN = "zh", "en"
LANGUAGES = (ZH, EN)
LANGUAGE_METADATA = "accept-language"  # the gRPC metadata key a client states its language in

# id: (Chinese, English). Fields in braces are filled by `say`.
CATALOGUE: Mapping[str, tuple[str, str]] = {
    # Verdict explanations (server)
    "verdict.VALID": ("有效：检验有效期至 {month} 月底", "valid until the end of {month}"),
    "verdict.INSPECTION_EXPIRED": ("检验有效期已于 {month} 月底届满", "inspection validity ended with {month}"),
    "verdict.SUPERSEDED": ("该凭证已被更新的凭证取代", "a newer mark replaces this one"),
    "verdict.REVOKED": ("凭证 {serial} 已被撤销", "mark {serial} has been revoked"),
    "verdict.VEHICLE_BLOCKED": ("车辆状态禁止上道路行驶", "the vehicle's status forbids the road"),
    "verdict.PRESENTATION_EXPIRED": (
        "该实时二维码已过期：请出示新的二维码",
        "this live QR has expired: ask for a fresh one",
    ),
    "verdict.UNKNOWN_VEHICLE": ("凭证真实，但无该车辆记录", "authentic mark, but no record of this vehicle"),
    "verdict.NOT_YET_VALID": (
        "该凭证证明的有效期自 {valid_from} 起，不含 {on}",
        "this mark attests validity from {valid_from}, not on {on}",
    ),
    # A mark refused before it is judged: the English is the decoder's own words (`detail`).
    "verdict.FORGED": ("伪造或被篡改的凭证：{detail}", "{detail}"),
    "verdict.UNKNOWN_KEY": ("签发密钥未知：{detail}", "{detail}"),
    "verdict.MALFORMED": ("不是检验标志电子凭证：{detail}", "{detail}"),
    "verdict.REVOKED_KEY": ("签发密钥已被撤销：{detail}", "{detail}"),
    # A police terminal verifying offline (client/offline/)
    "offline.STALE": (
        "离线数据自 {since} 起已过期：无法确认有效，请联网核查",
        "offline data stale since {since}: cannot confirm VALID, check online",
    ),
    "offline.NEWER_THAN_STATUS": (
        "该凭证晚于离线状态数据（{made}）签发：无法离线确认",
        "this mark is newer than the offline status data (made {made}): cannot confirm offline",
    ),
    "offline.OLDER_THAN_STATUS": (
        "该凭证早于离线状态数据覆盖的范围：无法离线确认，请联网核查",
        "this mark is older than the offline status data covers: cannot confirm offline, check online",
    ),
    "public.VALID": ("有效", "valid"),
    "public.NOT_VALID": ("无效", "not valid"),
    # The command line's words (client)
    "cli.valid_until": ("检验有效期至 {month}", "valid until {month}"),
    "cli.mark": ("凭证 {serial}", "mark {serial}"),
    "cli.presented": ("出示方式 {how}", "presented {how}"),
    "cli.status": ("状态 {code} {name}", "status {code} {name}"),
    "cli.overdue_cycles": ("逾期未检验 {cycles} 个检验周期", "{cycles} whole inspection cycle(s) without a mark"),
    "cli.scrapping_due": ("已达强制报废标准", "due for compulsory scrapping"),
    "cli.police_alert": ("警情提示", "POLICE ALERT"),
    "cli.within_validity": ("在检验有效期内", "within validity"),
    "cli.not_within_validity": ("不在检验有效期内", "NOT within validity"),
    "cli.current_mark": ("当前凭证 {serial}", "current mark {serial}"),
    "cli.no_mark": ("无", "none"),
    "cli.blocked": ("禁止上道路行驶：车辆状态不允许", "BLOCKED: the vehicle's status forbids the road"),
}


def say(key: str, language: str = EN, **fields: object) -> str:
    """The catalogue's text for `key` in `language` (English when it is not one of LANGUAGES)."""
    zh, en = CATALOGUE[key]
    return (zh if language == ZH else en).format(**fields)


def language_of(requested: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """zh or en: the one asked for, else VIMARK_LANG, else the locale's; English when none says."""
    for choice in (requested, environ.get("VIMARK_LANG")):
        if choice:
            return ZH if choice.lower().startswith("zh") else EN
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "")
        if value:
            return ZH if value.lower().startswith("zh") else EN
    return EN
