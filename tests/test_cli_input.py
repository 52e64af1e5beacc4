"""Input the command line must refuse cleanly (one line, exit 2) rather than crash or misread:
arguments that are not valid UTF-8, and `vimark vehicles import` CSV files (optional seats and
exemption_lost columns, unknown columns, what a failed batch left imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MovableClock, start_server
from vimark.client.cli import vehicles
from vimark.server.app import VimarkServer
from vimark.server.cli.main import main
from vimark.server.records import VehicleRecord

VIMARK = [sys.executable, "-m", "vimark.server.cli.main"]
NOWHERE = ["--server", "127.0.0.1:1"]  # nothing listens: a test passes only if the CLI refuses before connecting
HEADER = "plate_number,plate_type,vin,category,registered_on,valid_until,status"
GBK_PLATE = "闽C12346".encode("gbk")  # b"\xc3\xf6C12346": not valid UTF-8


def run_bytes(*args: bytes | str) -> subprocess.CompletedProcess[str]:
    # PYTHONUTF8: argv is decoded as UTF-8 whatever this machine's locale is.
    return subprocess.run(
        [*VIMARK, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUTF8": "1"},
    )


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vimark: "), stderr
    return lines[0]


# -- arguments that are not valid UTF-8 -------------------------------------------------------


def test_verify_with_undecodable_qr_text_is_an_error_not_a_verdict() -> None:
    result = run_bytes("verify", b"VM1:\xff", *NOWHERE)
    assert result.returncode == 2  # 1 would tell a script "mark not valid"
    line = one_error_line(result.stderr)
    assert "argument 2" in line and "not valid UTF-8" in line and "[INVALID_FIELD]" in line
    assert r"\xff" in line  # the offending bytes, escaped


def test_gbk_plate_under_utf8_names_its_flag() -> None:
    result = run_bytes("lookup", "--plate-number", GBK_PLATE, "--plate-type", "02", *NOWHERE)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "argument 3 (after --plate-number)" in line and "not valid UTF-8" in line


def test_gbk_plate_in_flag_equals_value_form(capsys: pytest.CaptureFixture[str]) -> None:
    # In process, argv as Python would have decoded it (surrogateescape).
    plate = GBK_PLATE.decode("utf-8", "surrogateescape")
    assert main(["lookup", f"--plate-number={plate}", "--plate-type", "02", *NOWHERE]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(r"vimark: --plate-number: '\xc3\xf6C12346' is not valid UTF-8 text")


# BMP and astral characters are valid text: they reach the plate parser (which the CLI runs before
# calling, so a typo costs no call) and, when they make a plate, the server.
@pytest.mark.parametrize(("plate", "outcome"), [("闽C12346", "[UNAVAILABLE]"), ("𠀀C12346", "province abbreviation")])
def test_valid_non_ascii_arguments_reach_the_server(
    plate: str, outcome: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lookup", "--plate-number", plate, "--plate-type", "02", "--timeout", "2", *NOWHERE]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert outcome in line and "not valid" not in line


# -- vehicles import: the CSV --------------------------------------------------------------------


@pytest.fixture
def served(sqlite_url: str, keys_dir: Path, clock: MovableClock) -> Iterator[VimarkServer]:
    server = start_server(sqlite_url, keys_dir, clock)
    yield server
    server.stop(grace=1)


def csv_file(tmp_path: Path, header: str, *rows: str) -> Path:
    path = tmp_path / "vehicles.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def row(n: int, *extra: str) -> str:
    """A valid data row for vehicle n (its own plate and VIN), with extra cells appended."""
    return ",".join([f"闽C{n:05d}", "02", f"LSVAB2BJ5KN{n:06d}", "small_passenger", "2022-06-15", "", "", *extra])


def import_file(path: Path, server: VimarkServer | None) -> int:
    address = f"127.0.0.1:{server.port}" if server else "127.0.0.1:1"
    return main(["vehicles", "import", str(path), "--server", address])


def stored(server: VimarkServer) -> dict[str, VehicleRecord]:
    return {v.vin: v for v in server.store.snapshot()[1]}


def test_optional_seats_and_exemption_lost_columns_are_imported(
    served: VimarkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = csv_file(
        tmp_path,
        HEADER + ",seats,exemption_lost",
        row(1, "5", "true"),
        row(2, "7", "YES"),
        row(3, "9", "1"),
        row(4, "", ""),  # unknown seats, exemption kept
        row(5, "2", "No"),
        row(6, "5", "FALSE"),
        row(7, "5", "0"),
    )
    assert import_file(path, served) == 0, capsys.readouterr().err
    assert "imported 7 vehicles: 7 new, 0 updated" in capsys.readouterr().out
    got = {vin[-1]: (v.seats, v.exemption_lost) for vin, v in stored(served).items()}
    assert got == {
        "1": (5, True),
        "2": (7, True),
        "3": (9, True),
        "4": (0, False),
        "5": (2, False),
        "6": (5, False),
        "7": (5, False),
    }


def test_optional_columns_may_come_in_any_order_or_be_absent(
    served: VimarkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = "exemption_lost,plate_number,plate_type,vin,category,registered_on,valid_until,status"
    (tmp_path / "a").mkdir()
    assert import_file(csv_file(tmp_path / "a", header, "true," + row(1)), served) == 0, capsys.readouterr().err
    # The original seven columns alone still import: unknown seats, exemption not lost.
    assert import_file(csv_file(tmp_path, HEADER, row(2)), served) == 0, capsys.readouterr().err
    got = {vin[-1]: (v.seats, v.exemption_lost) for vin, v in stored(served).items()}
    assert got == {"1": (0, True), "2": (0, False)}


@pytest.mark.parametrize(
    ("cells", "column", "shown"),
    [
        (("five", ""), "seats", "'five'"),
        (("-1", ""), "seats", "'-1'"),
        (("5.0", ""), "seats", "'5.0'"),
        (("٥", ""), "seats", "'٥'"),  # an Arabic-Indic five: int() would take it, the registry does not
        (("5", "y"), "exemption_lost", "'y'"),
        (("5", "truee"), "exemption_lost", "'truee'"),
        (("5", "2"), "exemption_lost", "'2'"),
    ],
)
def test_bad_optional_cells_name_file_line_and_column(
    cells: tuple[str, str], column: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = csv_file(tmp_path, HEADER + ",seats,exemption_lost", row(1, "5", "no"), row(2, *cells))
    assert import_file(path, None) == 2  # refused while reading: no server is needed
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"vimark: {column}: {path} line 3: {shown} ")
    assert line.endswith("[INVALID_FIELD]")


def test_too_many_seats_is_refused_by_the_server_at_its_line(
    served: VimarkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = csv_file(tmp_path, HEADER + ",seats", row(1, "5"), row(2, "100"))
    assert import_file(path, served) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"vimark: seats: {path} line 3: 100 seats")
    assert "(nothing was imported)" in line
    assert stored(served) == {}


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (HEADER + ",colour", "'colour'"),
        (HEADER + ",seats,Seats,owner", "'Seats', 'owner'"),
        (HEADER + ",", "''"),  # a trailing comma is an unnamed column
    ],
)
def test_unknown_columns_are_refused_by_name(
    header: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = csv_file(tmp_path, header)
    assert import_file(path, None) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"vimark: file: {path}: header has unknown columns {named} (columns: plate_number,")


def test_repeated_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = csv_file(tmp_path, HEADER + ",seats,seats", row(1, "5", "7"))
    assert import_file(path, None) == 2
    assert "header repeats seats" in one_error_line(capsys.readouterr().err)


def test_required_columns_stay_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = csv_file(tmp_path, HEADER.replace(",status", ",seats"))
    assert import_file(path, None) == 2
    assert "header lacks status" in one_error_line(capsys.readouterr().err)


def test_failed_batch_says_exactly_which_lines_were_imported(
    served: VimarkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Batches of 3: lines 2-4, 5-7, 8. Line 6 is bad, so its whole batch (lines 5-7) is refused.
    monkeypatch.setattr(vehicles, "BATCH", 3)
    rows = [row(n) for n in range(1, 8)]
    rows[4] = rows[4].replace("2022-06-15", "2022-13-15")
    path = csv_file(tmp_path, HEADER, *rows)
    assert import_file(path, served) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"vimark: registered_on: {path} line 6: ")
    assert line.endswith("(lines 2-4 were imported; line 5 onward were not) [INVALID_FIELD]")
    assert sorted(vin[-1] for vin in stored(served)) == ["1", "2", "3"]  # line 5 (vehicle 4) is not in


def test_failed_first_batch_imported_nothing(
    served: VimarkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(vehicles, "BATCH", 3)
    path = csv_file(tmp_path, HEADER, row(1), row(2), row(3).replace(",02,", ",00,"))
    assert import_file(path, served) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"vimark: plate_type: {path} line 4: ")
    assert "(nothing was imported)" in line
    assert stored(served) == {}
