"""One message catalogue in Chinese and English: verdict explanations from the server in the
language a call asks for, the command line's words in the language of --lang or the locale."""

from __future__ import annotations

import pytest

from conftest import vehicle
from vimark.client.cli.marks import describe_verification
from vimark.client.messages import CATALOGUE, EN, ZH, language_of, say
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

# Verdicts a verification can reach (NOT_VALID is the public's view; UNSPECIFIED is unset).
JUDGED = [v for v in pb.Verdict.keys() if v not in ("VERDICT_UNSPECIFIED", "VERDICT_NOT_VALID")]


def test_every_verdict_is_explained_in_both_languages() -> None:
    for name in JUDGED:
        zh, en = CATALOGUE[f"verdict.{name.removeprefix('VERDICT_')}"]
        assert zh and en and any("\u4e00" <= c <= "\u9fff" for c in zh), name


@pytest.mark.parametrize(
    ("asked", "environ", "expected"),
    [
        ("zh", {}, ZH),
        ("en", {"LANG": "zh_CN.UTF-8"}, EN),
        (None, {"VIMARK_LANG": "zh"}, ZH),
        (None, {"LC_ALL": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, ZH),
        (None, {"LANG": "C.UTF-8"}, EN),
        (None, {}, EN),
    ],
)
def test_the_language_comes_from_the_flag_then_the_environment(
    asked: str | None, environ: dict[str, str], expected: str
) -> None:
    assert language_of(asked, environ) == expected


def test_a_call_asking_for_chinese_is_answered_in_chinese(server: VimarkServer) -> None:
    target = f"127.0.0.1:{server.port}"
    with VimarkClient(target, timeout=10) as english, VimarkClient(target, timeout=10, language=ZH) as chinese:
        english.upsert_vehicles([vehicle(registered_on="2026-11-02")])
        mark = english.issue(
            request_id="reg-1", plate_number="闽C12345", plate_type="02", reason=cpb.ISSUE_REASON_REGISTRATION
        )
        seen_en, seen_zh = english.verify(mark.qr_text), chinese.verify(mark.qr_text)
        assert seen_en.explanation == say("verdict.VALID", EN, month=mark.valid_until)
        assert seen_zh.explanation == f"有效：检验有效期至 {mark.valid_until} 月底"
        forged = chinese.verify("VM1:" + "A" * 30)
        assert forged.verdict == pb.VERDICT_MALFORMED and forged.explanation.startswith("不是检验标志电子凭证")
        page = describe_verification(seen_zh, ZH)
        assert f"检验有效期至 {mark.valid_until}" in page and "凭证" in page
