"""Issue, verify, look up and present marks through a real server on loopback (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import MovableClock, start_server, vehicle
from vimark.client.errors import InvalidArgument, NotFound, PermissionDenied, RuleViolation
from vimark.client.sdk import VimarkClient
from vimark.server.app import VimarkServer
from vimark.server.policy import Role
from vimark.v1 import certificate_pb2 as cpb
from vimark.v1 import mark_service_pb2 as pb

PLATE = {"plate_number": "闽C12345", "plate_type": "02"}


def row_counts(db_url: str) -> tuple[int, ...]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        counts = tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in ("marks", "change_log"))
    engine.dispose()
    return counts


def register(client: VimarkClient, **fields: object) -> None:
    client.upsert_vehicles([vehicle(**fields)])  # type: ignore[arg-type]


def issue(
    client: VimarkClient, request_id: str, reason: int = cpb.ISSUE_REASON_REGISTRATION, **extra: str
) -> pb.IssueResponse:
    return client.issue(request_id=request_id, reason=reason, **{**PLATE, **extra})


def test_issue_then_verify_is_valid_with_full_police_view(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    assert mark.valid_until == "2028-11"  # small passenger car: first lane test after 24 months
    assert mark.qr_text.startswith("VM1:") and not mark.replayed
    result = client.verify(mark.qr_text)
    assert result.verdict == pb.VERDICT_VALID
    assert (result.serial, result.plate_number, result.plate_type, result.valid_until) == (
        mark.serial,
        "闽C12345",
        "02",
        "2028-11",
    )
    assert result.within_validity and result.presentation == cpb.PRESENTATION_OFFLINE
    assert result.status_codes == "A"


def test_newer_mark_supersedes_older(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    first = issue(client, "reg-1")
    lost = issue(client, "lost-1", cpb.ISSUE_REASON_PAPER_LOST)  # a copy: the same mark again
    assert (lost.serial, lost.valid_until) == (first.serial, first.valid_until)
    second = issue(client, "transfer-1", cpb.ISSUE_REASON_TRANSFER)  # a grant: a new current mark
    assert second.serial != first.serial and second.valid_until == first.valid_until
    assert client.verify(first.qr_text).verdict == pb.VERDICT_SUPERSEDED
    assert client.verify(second.qr_text).verdict == pb.VERDICT_VALID
    assert client.lookup(**PLATE).current_serial == second.serial


def test_retrying_a_request_id_returns_the_same_mark_and_writes_nothing(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    first = issue(client, "same-id")
    again = issue(client, "same-id")
    assert again.replayed and (again.serial, again.qr_text) == (first.serial, first.qr_text)
    assert client.lookup(**PLATE).current_serial == first.serial
    assert client.verify(first.qr_text).verdict == pb.VERDICT_VALID  # no newer mark was made


def test_status_change_to_stolen_blocks_then_clearing_restores(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    client.set_status(**PLATE, status_codes="C")
    blocked = client.verify(mark.qr_text)
    assert blocked.verdict == pb.VERDICT_VEHICLE_BLOCKED and blocked.police_alert
    assert blocked.status_codes == "C"
    assert client.lookup(**PLATE).blocked
    client.set_status(**PLATE, status_codes="A")
    assert client.verify(mark.qr_text).verdict == pb.VERDICT_VALID


def test_changed_characters_never_verify(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    text = issue(client, "reg-1").qr_text
    altered = []
    for i in range(len(text)):  # every position, the prefix included
        replacement = "0" if text[i] != "0" else "1"
        altered.append(text[:i] + replacement + text[i + 1 :])
    results = client.verify_batch(altered).results
    # A changed seal key id names a key we lack (UNKNOWN_KEY); anything else fails the seal or the form.
    assert {r.verdict for r in results} <= {pb.VERDICT_FORGED, pb.VERDICT_MALFORMED, pb.VERDICT_UNKNOWN_KEY}


def test_mark_expires_after_its_month(client: VimarkClient, clock: MovableClock) -> None:
    # A goods vehicle registered 2025-12: yearly grid 2026-12, 2027-12, 2028-12, ...
    register(client, registered_on="2025-12-10", valid_until="2026-12", category="goods", seats=0)
    mark = issue(client, "redl-1", cpb.ISSUE_REASON_REDOWNLOAD)
    clock.advance(days=36)  # 2026-12-31 10:00 China time: last day of the month
    assert client.verify(mark.qr_text).verdict == pb.VERDICT_VALID
    clock.advance(days=1)  # 2027-01-01
    expired = client.verify(mark.qr_text)
    assert expired.verdict == pb.VERDICT_INSPECTION_EXPIRED and not expired.within_validity
    assert "Q" in expired.status_codes and expired.overdue_cycles == 0  # first cycle running
    status = client.lookup(**PLATE)
    assert not status.within_validity and status.overdue_cycles == 0 and not status.scrapping_due
    clock.advance(days=365 + 366)  # 2029-01-01: the cycles ending 2027-12 and 2028-12 are over
    later = client.lookup(**PLATE)
    assert (later.overdue_cycles, later.scrapping_due) == (2, False)
    clock.advance(days=365)  # 2030-01-01: a third whole cycle without a mark
    scrapping = client.verify(mark.qr_text)
    assert (scrapping.overdue_cycles, scrapping.scrapping_due) == (3, True)


def test_judging_at_a_past_date(client: VimarkClient, clock: MovableClock) -> None:
    register(client, registered_on="2025-01-10", valid_until="2026-12", category="goods", seats=0)
    mark = issue(client, "redl-1", cpb.ISSUE_REASON_REDOWNLOAD)
    clock.advance(days=100)
    assert client.verify(mark.qr_text).verdict == pb.VERDICT_INSPECTION_EXPIRED
    on_accident_day = client.verify(mark.qr_text, at_date="2026-12-20")
    assert on_accident_day.verdict == pb.VERDICT_VALID and on_accident_day.within_validity


def test_live_qr_expires_but_download_and_print_copies_do_not(client: VimarkClient, clock: MovableClock) -> None:
    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    shown = client.present(**PLATE)
    assert shown.download_qr_text == mark.qr_text and shown.serial == mark.serial
    live = client.verify(shown.live_qr_text)
    assert live.verdict == pb.VERDICT_VALID and live.presentation == cpb.PRESENTATION_ONLINE
    assert client.verify(shown.print_qr_text).presentation == cpb.PRESENTATION_PRINT
    clock.advance(minutes=3, seconds=1)
    assert client.verify(shown.live_qr_text).verdict == pb.VERDICT_PRESENTATION_EXPIRED
    assert client.verify(shown.download_qr_text).verdict == pb.VERDICT_VALID
    assert client.verify(shown.print_qr_text).verdict == pb.VERDICT_VALID


def test_revoked_mark(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    client.revoke_mark(mark.serial, "issued in error")
    assert client.verify(mark.qr_text).verdict == pb.VERDICT_REVOKED


def test_rules_refuse_with_a_reason(client: VimarkClient, clock: MovableClock) -> None:
    register(client, registered_on="2026-11-02", category="small_van")
    with pytest.raises(RuleViolation) as refused:
        issue(client, "exempt-1", cpb.ISSUE_REASON_EXEMPTION)
    assert refused.value.reason == "NOT_EXEMPT"
    register(
        client,
        plate_number="闽C54321",
        vin="LSVAB2BJ5KN000002",
        registered_on="2016-03-01",
        valid_until="2026-03",
        status_codes="E",
    )
    with pytest.raises(RuleViolation) as cancelled:
        client.issue(request_id="x", plate_number="闽C54321", plate_type="02", reason=cpb.ISSUE_REASON_REDOWNLOAD)
    assert cancelled.value.reason == "VEHICLE_STATUS_FORBIDS_ISSUE"


def test_inspection_too_early_names_the_window(client: VimarkClient) -> None:
    register(client, registered_on="2025-06-10", valid_until="2027-06")
    with pytest.raises(RuleViolation) as early:
        issue(client, "insp-1", cpb.ISSUE_REASON_INSPECTION_PASSED, inspected_on="2026-11-20", station_id="FJ-0001")
    assert early.value.reason == "TOO_EARLY" and "2027-04-01" in early.value.message


def test_inspection_in_the_window_extends_on_the_grid(client: VimarkClient, clock: MovableClock) -> None:
    register(client, registered_on="2020-12-10", valid_until="2026-12", category="commercial_passenger", seats=5)
    mark = issue(client, "insp-1", cpb.ISSUE_REASON_INSPECTION_PASSED, inspected_on="2026-11-24", station_id="FJ-0001")
    assert mark.valid_until == "2027-06"  # commercial passenger vehicle past 5 years: every 6 months


def test_batch_keeps_order_and_a_bad_item_fails_alone(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    results = client.verify_batch([mark.qr_text, "not a mark", "", "VM1:" + "A" * 2000, mark.qr_text]).results
    assert [r.verdict for r in results] == [
        pb.VERDICT_VALID,
        pb.VERDICT_MALFORMED,
        pb.VERDICT_MALFORMED,
        pb.VERDICT_MALFORMED,
        pb.VERDICT_VALID,
    ]


def test_lookup_by_vin_and_unknown_vehicle(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    assert client.lookup(vin="LSVAB2BJ5KN000001").plate_number == "闽C12345"
    with pytest.raises(NotFound):
        client.lookup(plate_number="闽C99999", plate_type="02")


def test_trust_list_names_the_active_key(client: VimarkClient) -> None:
    trust = client.trust_list()
    assert [(k.key_id, k.algorithm, k.status, len(k.public_key)) for k in trust.keys] == [
        (1, "Ed25519", pb.KEY_STATUS_ACTIVE, 32)
    ]
    assert len(trust.seal_keys) == 1  # the police role sees the seal key for offline checks


@pytest.mark.parametrize(
    "field_values, field",
    [
        ({"request_id": ""}, "request_id"),
        ({"plate_number": "ABC"}, "plate_number"),
        ({"plate_type": "98"}, "plate_type"),
        ({"reason": 0}, "reason"),
        ({"reason": cpb.ISSUE_REASON_INSPECTION_PASSED}, "inspected_on"),
        ({"vin": "IOQ"}, "vin"),
    ],
)
def test_malformed_issue_names_the_field_and_changes_nothing(
    client: VimarkClient, db_url: str, field_values: dict[str, object], field: str
) -> None:
    register(client, registered_on="2026-11-02")
    request = {"request_id": "r", "reason": cpb.ISSUE_REASON_REGISTRATION, **PLATE, **field_values}
    before = row_counts(db_url)
    with pytest.raises(InvalidArgument) as bad:
        client.issue(**request)  # type: ignore[arg-type]
    assert bad.value.field == field
    assert client.lookup(**PLATE).current_serial == 0
    assert row_counts(db_url) == before  # no mark, no change-log row


def test_malformed_verify_and_lookup(client: VimarkClient) -> None:
    with pytest.raises(InvalidArgument) as empty:
        client.verify("")
    assert empty.value.field == "qr_text"
    with pytest.raises(InvalidArgument) as oversize:
        client.verify("VM1:" + "0" * 5000)
    assert oversize.value.field == "qr_text" and "1024" in oversize.value.message
    with pytest.raises(InvalidArgument) as date:
        client.verify("VM1:00", at_date="2026-13-01")
    assert date.value.field == "at_date"
    with pytest.raises(InvalidArgument):
        client.verify_batch([])
    with pytest.raises(InvalidArgument) as batch:
        client.verify_batch(["x"] * 1001)
    assert "1000" in batch.value.message
    with pytest.raises(InvalidArgument) as plate:
        client.lookup(plate_number="闽C1234", plate_type="02")
    assert plate.value.field == "plate_number"


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("hello", pb.VERDICT_MALFORMED),
        ("VM2:000", pb.VERDICT_MALFORMED),
        ("VM1:abc", pb.VERDICT_MALFORMED),
        ("VM1:" + "0" * 30, pb.VERDICT_MALFORMED),
    ],
)
def test_garbage_is_a_verdict(client: VimarkClient, text: str, verdict: int) -> None:
    assert client.verify(text).verdict == verdict


def test_malformed_registry_rows_name_the_row_and_field(client: VimarkClient) -> None:
    with pytest.raises(InvalidArgument) as bad:
        client.upsert_vehicles(
            [vehicle(), vehicle(plate_number="闽C22222", vin="LSVAB2BJ5KN000002", category="spaceship")]
        )
    assert bad.value.field == "vehicles[1].category"
    with pytest.raises(NotFound):
        client.lookup(**PLATE)  # the whole batch was refused: nothing half-written
    with pytest.raises(InvalidArgument) as q:
        register(client)
        client.set_status(**PLATE, status_codes="Q")
    assert q.value.field == "status_codes"


def test_unknown_vehicle_in_an_authentic_mark(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    # Re-register the plate to another VIN: the mark now names a vehicle that no longer holds it.
    client.upsert_vehicles([vehicle(plate_number="闽C77777")])
    result = client.verify(mark.qr_text)
    assert result.verdict == pb.VERDICT_UNKNOWN_VEHICLE


def test_public_role_sees_only_valid_plate_and_month(
    server: VimarkServer, db_url: str, keys_dir: Path, clock: MovableClock
) -> None:
    public = start_server(db_url, keys_dir, clock, dev_role=Role.PUBLIC)
    try:
        with VimarkClient(f"127.0.0.1:{server.port}") as police, VimarkClient(f"127.0.0.1:{public.port}") as app:
            register(police, registered_on="2026-11-02")
            mark = issue(police, "reg-1")
            public.sync.catch_up()
            seen = app.verify(mark.qr_text)
            assert seen.verdict == pb.VERDICT_VALID
            assert (seen.plate_number, seen.plate_type, seen.valid_until) == ("闽C12345", "02", "2028-11")
            assert not seen.HasField("issue_time")
            for absent in (
                "serial",
                "vin",
                "status_codes",
                "current_serial",
                "current_valid_until",
                "police_alert",
                "key_id",
                "presentation",
                "within_validity",
                "overdue_cycles",
            ):
                assert not getattr(seen, absent), absent
            police.set_status(**PLATE, status_codes="C")
            public.sync.catch_up()
            hidden = app.verify(mark.qr_text)
            assert hidden.verdict == pb.VERDICT_NOT_VALID and not hidden.status_codes
            assert hidden.explanation == "not valid"
            with pytest.raises(PermissionDenied):
                app.lookup(**PLATE)
            assert not app.trust_list().seal_keys
    finally:
        public.stop(grace=1)


def test_blocked_status_shows_even_on_an_expired_live_qr(client: VimarkClient, clock: MovableClock) -> None:
    register(client, registered_on="2026-11-02")
    issue(client, "reg-1")
    screenshot = client.present(**PLATE).live_qr_text
    client.set_status(**PLATE, status_codes="C")
    clock.advance(hours=2)
    seen = client.verify(screenshot)
    assert seen.verdict == pb.VERDICT_VEHICLE_BLOCKED and seen.police_alert


def test_a_mark_attests_validity_from_the_day_it_was_granted(client: VimarkClient, clock: MovableClock) -> None:
    register(client, registered_on="2026-11-02")
    granted = issue(client, "reg-1")  # granted 2026-11-25
    assert client.verify(granted.qr_text, at_date="2026-11-25").verdict == pb.VERDICT_VALID
    assert client.verify(granted.qr_text, at_date="2026-11-24").verdict == pb.VERDICT_NOT_YET_VALID
    # A copy re-issued a month later still attests the validity from the day it was granted:
    # an insurer asking about 2026-12-01 gets VALID from the newer copy too.
    clock.advance(days=30)
    copy = issue(client, "lost-1", cpb.ISSUE_REASON_PAPER_LOST)
    assert client.verify(copy.qr_text, at_date="2026-12-01").verdict == pb.VERDICT_VALID
    assert client.verify(copy.qr_text, at_date="2026-11-24").verdict == pb.VERDICT_NOT_YET_VALID


@pytest.mark.parametrize("month", ["6000-01", "0000-01", "1949-12", "2026-00"])
def test_registry_months_out_of_range_are_refused(client: VimarkClient, month: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        register(client, valid_until=month)
    assert bad.value.field == "vehicles[0].valid_until"
    register(client, registered_on="2026-11-02")  # and the index still takes new rows
    assert client.lookup(**PLATE).plate_number == "闽C12345"


def test_a_reissued_plate_starts_afresh(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    old = issue(client, "reg-1")
    # The plate is cancelled with its car and later issued to another vehicle (another VIN).
    register(
        client, vin="LGWEF4A59MH000777", category="goods", registered_on="2010-03-01", valid_until="2025-03", seats=0
    )
    status = client.lookup(**PLATE)
    assert (status.vin, status.current_serial, status.valid_until, status.within_validity) == (
        "LGWEF4A59MH000777",
        0,
        "2025-03",
        False,
    )
    assert client.verify(old.qr_text).verdict == pb.VERDICT_SUPERSEDED


def test_present_after_a_key_is_revoked_shows_fresh_copies(client: VimarkClient, keys_dir: Path) -> None:
    from test_keys import wait_for_key

    from vimark.server.keys import KeyDirectory

    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    assert client.present(**PLATE).download_qr_text == mark.qr_text  # deterministic signing
    KeyDirectory(keys_dir).revoke(1)
    KeyDirectory(keys_dir).rotate()
    wait_for_key(client, 2, pb.KEY_STATUS_ACTIVE)
    assert client.verify(mark.qr_text).verdict == pb.VERDICT_REVOKED
    shown = client.present(**PLATE)
    for text in (shown.live_qr_text, shown.download_qr_text, shown.print_qr_text):
        assert client.verify(text).verdict == pb.VERDICT_VALID


def test_png_and_pdf_copies_decode_and_verify(client: VimarkClient, tmp_path: Path) -> None:
    from pypdfium2 import PdfDocument

    from vimark.client.qrimage import decode_image, decode_pil
    from vimark.client.render import render

    register(client, plate_number="粤BD12345", plate_type="52", registered_on="2026-11-02")
    mark = client.issue(
        request_id="nev-1", plate_number="粤BD12345", plate_type="52", reason=cpb.ISSUE_REASON_REGISTRATION
    )
    render(mark.qr_text, tmp_path / "mark.png")
    render(
        mark.qr_text,
        tmp_path / "mark.pdf",
        plate_number=mark.plate_number,
        plate_type=mark.plate_type,
        valid_until=mark.valid_until,
        serial=mark.serial,
    )
    page = PdfDocument(str(tmp_path / "mark.pdf"))[0].render(scale=200 / 72).to_pil()
    for scanned in (decode_image(tmp_path / "mark.png"), decode_pil(page)):
        assert scanned == mark.qr_text
        assert client.verify(scanned).verdict == pb.VERDICT_VALID


def test_a_revoked_mark_is_not_reissued(client: VimarkClient) -> None:
    register(client, registered_on="2026-11-02")
    mark = issue(client, "reg-1")
    client.revoke_mark(mark.serial, "issued in error")
    with pytest.raises(RuleViolation) as refused:
        issue(client, "redl-1", cpb.ISSUE_REASON_REDOWNLOAD)
    assert refused.value.reason == "MARK_REVOKED"


def test_an_early_renewal_keeps_attesting_the_unbroken_validity(client: VimarkClient, clock: MovableClock) -> None:
    register(client, registered_on="2024-12-10", valid_until="2026-12")
    first = issue(client, "redl-1", cpb.ISSUE_REASON_REDOWNLOAD)  # 2026-11-25: validity attested from today
    clock.advance(days=10)  # 2026-12-05: exempt at age 2, inside the window, before the old validity ends
    renewed = issue(client, "exempt-1", cpb.ISSUE_REASON_EXEMPTION)
    assert renewed.valid_until == "2028-12"
    assert client.verify(renewed.qr_text, at_date="2026-11-28").verdict == pb.VERDICT_VALID
    assert client.verify(first.qr_text, at_date="2026-11-28").verdict == pb.VERDICT_SUPERSEDED


def test_a_new_car_without_a_mark_is_within_its_first_validity(client: VimarkClient) -> None:
    register(client, registered_on="2026-10-01")  # first lane test due 2028-10
    status = client.lookup(**PLATE)
    assert status.within_validity and status.valid_until == "2028-10" and status.status_codes == "A"
    # Issue agrees with Lookup: the owner may download a mark of that first validity.
    copy = issue(client, "first-copy", cpb.ISSUE_REASON_REDOWNLOAD)
    assert copy.valid_until == "2028-10" and client.verify(copy.qr_text).verdict == pb.VERDICT_VALID
    register(client, plate_number="闽C54321", vin="LSVAB2BJ5KN000002", registered_on="2020-01-15")
    old = client.lookup(plate_number="闽C54321", plate_type="02")  # first due 2022-01 long past, never marked
    assert not old.within_validity and "Q" in old.status_codes and old.valid_until == "2022-01"
    with pytest.raises(RuleViolation) as refused:
        client.issue(
            request_id="old-copy", reason=cpb.ISSUE_REASON_REDOWNLOAD, plate_number="闽C54321", plate_type="02"
        )
    assert refused.value.reason == "INSPECTION_OVERDUE"


def test_a_feed_without_seats_or_exemption_keeps_what_is_known(client: VimarkClient, server: VimarkServer) -> None:
    # A car two years old, in its window on 2026-11-25: exempt from the lane test unless it lost that.
    fresh = vehicle(plate_number="闽C22222", vin="LSVAB2BJ5KN000002", registered_on="2024-12-10")
    lost = vehicle(registered_on="2024-12-10", seats=7)
    lost.exemption_lost = True  # say, an accident with casualties
    client.upsert_vehicles([fresh, lost])
    # A later feed that knows neither (a status update from a CSV without those columns).
    client.upsert_vehicles([vehicle(registered_on="2024-12-10", seats=0, status_codes="G")])
    client.set_status(**PLATE, status_codes="A")
    with pytest.raises(RuleViolation) as refused:
        issue(client, "exempt-1", cpb.ISSUE_REASON_EXEMPTION)
    assert refused.value.reason == "NOT_EXEMPT"
    granted = client.issue(
        request_id="exempt-2", reason=cpb.ISSUE_REASON_EXEMPTION, plate_number="闽C22222", plate_type="02"
    )
    assert granted.valid_until == "2028-12"
    assert {v.plate_number: v.seats for v in server.store.snapshot()[1]}["闽C12345"] == 7


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        ({"registered_on": "2026-11-26"}, "vehicles[0].registered_on", "after today"),
        ({"registered_on": "2015-03-10", "valid_until": "2099-12"}, "vehicles[0].valid_until", "beyond any validity"),
        (
            {"registered_on": "2015-03-10", "valid_until": "2010-01"},
            "vehicles[0].valid_until",
            "before the registration",
        ),
    ],
)
def test_registry_dates_must_be_possible_today(
    client: VimarkClient, fields: dict[str, str], field: str, why: str
) -> None:
    with pytest.raises(InvalidArgument) as bad:
        register(client, **fields)
    assert bad.value.field == field and why in bad.value.message
    register(client, registered_on="2015-03-10", valid_until="2029-02")  # the furthest possible on 2026-11-25
    assert client.lookup(**PLATE).valid_until == "2029-02"
