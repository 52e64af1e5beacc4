"""Rendering a QR text (PNG, SVG, PDF) and reading it back (qrimage): exact round trips.

The QR texts are random strings over the QR alphanumeric alphabet behind the "VM1:" prefix, the
shape of a vimark mark, so these tests do not depend on the certificate codec.
"""

from __future__ import annotations

import io
import random
import re
import string
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TypedDict

import pypdfium2
import pytest
import zxingcpp
from PIL import Image, ImageFilter

from vimark.client.errors import VimarkError
from vimark.client.qrimage import ImageDecodeError, decode_image, decode_pil
from vimark.client.render import (
    MAX_VERSION,
    QUIET_ZONE,
    RenderError,
    qr_matrix,
    render,
    render_pdf,
    render_png,
    render_svg,
)

ALPHABET = string.digits + string.ascii_uppercase + " $%*+-./:"
LONGEST = 311
"""Largest QR alphanumeric capacity of version 10 at error level M (ISO/IEC 18004, table 7)."""
LENGTHS = [50, 120, 200, 280, LONGEST]


class PdfFields(TypedDict):
    plate_number: str
    plate_type: str
    valid_until: str


PDF_FIELDS: PdfFields = {"plate_number": "闽C12345", "plate_type": "02", "valid_until": "2027-06"}
DPI = 200


def qr_text(length: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "VM1:" + "".join(rng.choice(ALPHABET) for _ in range(length - 4))


def expected_modules(text: str) -> list[list[bool]]:
    """The symbol with its quiet zone, one bool per module (True = dark)."""
    return [[bool(m) for m in row] for row in qr_matrix(text).matrix_iter(scale=1, border=QUIET_ZONE)]


def rasterise(pdf: Path, dpi: int = DPI) -> Image.Image:
    document = pypdfium2.PdfDocument(pdf)
    try:
        image: Image.Image = document[0].render(scale=dpi / 72).to_pil().convert("L")
        return image
    finally:
        document.close()


# --- the QR itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
def test_qr_is_alphanumeric_level_m_version_at_most_10(length: int) -> None:
    qr = qr_matrix(qr_text(length))
    assert qr.mode == "alphanumeric"
    assert qr.error == "M"
    assert isinstance(qr.version, int) and qr.version <= MAX_VERSION


def test_longest_text_fills_version_10_and_one_more_character_is_refused(tmp_path: Path) -> None:
    assert qr_matrix(qr_text(LONGEST)).version == 10
    out = tmp_path / "too-long.png"
    with pytest.raises(RenderError, match="version 11") as caught:
        render_png(qr_text(LONGEST + 1), out)
    assert caught.value.reason == "RENDER"
    assert isinstance(caught.value, VimarkError)
    assert not out.exists()


@pytest.mark.parametrize("text", ["", "vm1:lowercase", "VM1:ÄÖ", "VM1:A#B"])
def test_text_outside_the_alphanumeric_alphabet_is_refused(text: str) -> None:
    with pytest.raises(RenderError, match="alphanumeric"):
        qr_matrix(text)


# --- PNG ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
def test_png_round_trip(tmp_path: Path, length: int) -> None:
    text = qr_text(length, seed=length)
    out = tmp_path / "mark.png"
    render_png(text, out)
    assert decode_image(out) == text


@pytest.mark.parametrize("scale", [1, 3, 8])
def test_png_is_the_exact_matrix_with_a_quiet_zone(tmp_path: Path, scale: int) -> None:
    text = qr_text(200, seed=scale)
    out = tmp_path / "mark.png"
    render_png(text, out, scale=scale)
    expected = expected_modules(text)
    with Image.open(out) as image:
        grey = image.convert("L")
    assert grey.size == (len(expected) * scale, len(expected) * scale)
    sampled = [
        [grey.getpixel((x * scale + scale // 2, y * scale + scale // 2)) == 0 for x in range(len(row))]
        for y, row in enumerate(expected)
    ]
    assert sampled == expected
    assert not any(expected[0]) and not any(row[0] for row in expected)  # quiet zone is light


def test_png_scale_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="scale"):
        render_png(qr_text(50), tmp_path / "mark.png", scale=0)


# --- SVG ---------------------------------------------------------------------------------------------


def svg_dark_modules(path_data: str, size: int) -> list[list[bool]]:
    """Replay segno's line path (M/m moves, h strokes one module high at y + 0.5) onto a grid."""
    grid = [[False] * size for _ in range(size)]
    x = y = 0.0
    for command, args in re.findall(r"([A-Za-z])([^A-Za-z]*)", path_data):
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", args)]
        if command == "M":
            x, y = numbers
        elif command == "m":
            x, y = x + numbers[0], y + numbers[1]
        elif command == "h":
            for column in range(round(x), round(x + numbers[0])):
                grid[int(y)][column] = True
            x += numbers[0]
        else:
            raise AssertionError(f"unexpected SVG path command {command!r}")
    return grid


def test_svg_is_xml_and_draws_the_exact_matrix(tmp_path: Path) -> None:
    text = qr_text(LONGEST, seed=7)
    out = tmp_path / "mark.svg"
    render_svg(text, out, scale=5)
    root = ET.parse(out).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    expected = expected_modules(text)
    assert root.get("width") == root.get("height") == str(len(expected) * 5)
    paths = list(root.iter(f"{ns}path")) + list(root.iter(f"{ns}rect"))
    assert paths, "no path/rect data"
    background = [p for p in paths if p.get("fill") in ("#fff", "#ffffff", "white")]
    assert background, "the SVG needs an opaque light background"
    (dark,) = [p for p in paths if p.get("stroke")]
    assert svg_dark_modules(dark.get("d", ""), len(expected)) == expected
    # The same grid, drawn as an image, scans to the same text.
    image = Image.new("L", (len(expected) * 4, len(expected) * 4), 255)
    for y, row in enumerate(expected):
        for x, is_dark in enumerate(row):
            if is_dark:
                image.paste(0, (x * 4, y * 4, x * 4 + 4, y * 4 + 4))
    assert decode_pil(image) == text


# --- PDF ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [50, LONGEST])
def test_pdf_round_trip(tmp_path: Path, length: int) -> None:
    text = qr_text(length, seed=length + 1)
    out = tmp_path / "mark.pdf"
    render_pdf(text, out, serial=123456, **PDF_FIELDS)
    assert decode_pil(rasterise(out)) == text
    assert decode_image(out) == text  # decode_image rasterises page 1 itself


def test_pdf_is_one_a4_page_with_the_mark_details_as_text(tmp_path: Path) -> None:
    out = tmp_path / "mark.pdf"
    render_pdf(qr_text(200), out, serial=987654, **PDF_FIELDS)
    document = pypdfium2.PdfDocument(out)
    try:
        assert len(document) == 1
        width, height = document[0].get_size()
        assert (round(width), round(height)) == (595, 842)  # A4 in points
        text = document[0].get_textpage().get_text_range()
    finally:
        document.close()
    for expected in ("闽C12345", "机动车检验标志电子凭证", "检验有效期至", "2027-06", "02", "987654"):
        assert expected in text


@pytest.mark.parametrize("plate", ["粤BD12345", "京A1234警", "闽C12345"])
def test_pdf_plate_numbers_stay_searchable(tmp_path: Path, plate: str) -> None:
    out = tmp_path / "mark.pdf"
    render_pdf(qr_text(80), out, plate_number=plate, plate_type="52", valid_until="2026-12")
    document = pypdfium2.PdfDocument(out)
    try:
        assert plate in document[0].get_textpage().get_text_range()
    finally:
        document.close()


def test_pdf_without_serial_prints_no_serial_line(tmp_path: Path) -> None:
    out = tmp_path / "mark.pdf"
    render_pdf(qr_text(80), out, **PDF_FIELDS)
    document = pypdfium2.PdfDocument(out)
    try:
        assert "Serial" not in document[0].get_textpage().get_text_range()
    finally:
        document.close()


def test_pdf_qr_is_at_least_50_mm_wide_with_a_clear_quiet_zone(tmp_path: Path) -> None:
    text = qr_text(LONGEST, seed=3)
    out = tmp_path / "mark.pdf"
    render_pdf(text, out, **PDF_FIELDS)
    page = rasterise(out)
    (barcode,) = zxingcpp.read_barcodes(page, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
    assert barcode.text == text
    corners = barcode.position
    xs = [corners.top_left.x, corners.top_right.x, corners.bottom_left.x, corners.bottom_right.x]
    ys = [corners.top_left.y, corners.top_right.y, corners.bottom_left.y, corners.bottom_right.y]
    width_px = max(xs) - min(xs)
    assert width_px / DPI * 25.4 >= 50.0
    modules = len(expected_modules(text)) - 2 * QUIET_ZONE
    module_px = width_px / modules
    margin = QUIET_ZONE * module_px - 2  # the quiet-zone ring, less a pixel or two of anti-aliasing
    ring = page.crop(
        (
            round(min(xs) - margin),
            round(min(ys) - margin),
            round(max(xs) + margin),
            round(max(ys) + margin),
        )
    )
    symbol = (
        round(margin - 2),
        round(margin - 2),
        round(margin + width_px + 2),
        round(margin + width_px + 2),
    )
    ring.paste(255, symbol)  # blank out the symbol (and its anti-aliased edge); the ring must be blank
    darkest, _ = ring.getextrema()
    assert isinstance(darkest, int) and darkest > 200, "something is drawn inside the quiet zone"


def test_pdf_field_checks(tmp_path: Path) -> None:
    out = tmp_path / "mark.pdf"
    with pytest.raises(RenderError, match="valid_until"):
        render_pdf(qr_text(80), out, plate_number="闽C12345", plate_type="02", valid_until="2027-13")
    with pytest.raises(RenderError, match="plate_number"):
        render_pdf(qr_text(80), out, plate_number=" ", plate_type="02", valid_until="2027-06")
    assert not out.exists()


def test_pdf_font_from_environment_must_be_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = tmp_path / "not-a-font.ttf"
    bogus.write_bytes(b"not a font")
    monkeypatch.setenv("VIMARK_PDF_FONT", str(bogus))
    with pytest.raises(RenderError, match="VIMARK_PDF_FONT"):
        render_pdf(qr_text(80), tmp_path / "mark.pdf", **PDF_FIELDS)


# --- render() picks the format -------------------------------------------------------------------


def test_render_dispatches_on_the_extension(tmp_path: Path) -> None:
    text = qr_text(150, seed=11)
    render(text, tmp_path / "a.PNG")
    render(text, tmp_path / "a.svg")
    render(text, tmp_path / "a.pdf", serial=1, **PDF_FIELDS)
    assert (tmp_path / "a.PNG").read_bytes().startswith(b"\x89PNG")
    assert ET.parse(tmp_path / "a.svg").getroot().tag.endswith("svg")
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF-")
    assert decode_image(tmp_path / "a.PNG") == decode_image(tmp_path / "a.pdf") == text


@pytest.mark.parametrize("name", ["mark.gif", "mark"])
def test_render_refuses_unknown_extensions(tmp_path: Path, name: str) -> None:
    with pytest.raises(RenderError) as caught:
        render(qr_text(50), tmp_path / name)
    message = str(caught.value)
    assert (".gif" in message) if name.endswith(".gif") else ("no extension" in message)
    assert ".png" in message and ".svg" in message and ".pdf" in message
    assert not (tmp_path / name).exists()


def test_render_pdf_needs_the_plate_fields(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="plate_type, valid_until"):
        render(qr_text(50), tmp_path / "mark.pdf", plate_number="闽C12345")


# --- reading photos and bad inputs ------------------------------------------------------------------


@pytest.mark.parametrize("length", [120, LONGEST])
def test_degraded_photo_still_decodes(tmp_path: Path, length: int) -> None:
    text = qr_text(length, seed=length + 2)
    png = tmp_path / "mark.png"
    render_png(text, png, scale=8)
    with Image.open(png) as image:
        qr = image.convert("RGB")
    qr = qr.resize((qr.width * 3 // 4, qr.height * 3 // 4), Image.Resampling.BILINEAR)
    qr = qr.rotate(7, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    photo = Image.new("RGB", (qr.width + 300, qr.height + 200), (120, 110, 100))  # a desk around it
    photo.paste(qr, (170, 90))
    photo = photo.filter(ImageFilter.GaussianBlur(radius=1))
    jpeg = tmp_path / "photo.jpg"
    photo.save(jpeg, format="JPEG", quality=60)
    assert decode_image(jpeg) == text


@pytest.mark.parametrize("seed", range(5))
def test_thumbnail_with_modules_under_two_pixels_decodes(tmp_path: Path, seed: int) -> None:
    text = qr_text(LONGEST, seed=seed)
    png = tmp_path / "mark.png"
    render_png(text, png, scale=8)
    with Image.open(png) as image:
        grey = image.convert("L")
    side = round(grey.width * 1.8 / 8)  # 1.8 pixels per module, slightly turned
    thumbnail = grey.resize((side, side), Image.Resampling.BILINEAR).rotate(5, expand=True, fillcolor=255)
    assert decode_pil(thumbnail) == text


def test_transparent_background_is_read_as_white(tmp_path: Path) -> None:
    text = qr_text(100, seed=5)
    png = tmp_path / "mark.png"
    render_png(text, png)
    with Image.open(png) as image:
        grey = image.convert("L")
    transparent = Image.new("RGBA", grey.size, (0, 0, 0, 0))  # "light" is transparent black
    transparent.putalpha(grey.point(lambda v: 255 - v))
    assert decode_pil(transparent) == text


def test_image_without_qr(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    noise = Image.effect_noise((400, 300), 60).convert("RGB")
    noise.save(blank)
    with pytest.raises(ImageDecodeError, match="no readable QR") as caught:
        decode_image(blank)
    assert caught.value.reason == "IMAGE_UNREADABLE"


@pytest.mark.parametrize("name", ["notes.png", "notes.txt", "notes.jpg"])
def test_non_image_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("VM1:THIS IS TEXT, NOT A PICTURE\n")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    png = tmp_path / "mark.png"
    render_png(qr_text(100), png)
    png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(ImageDecodeError):
        decode_image(png)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="cannot read"):
        decode_image(tmp_path / "absent.png")


def test_file_named_pdf_that_is_not_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "mark.pdf"
    path.write_bytes(b"hello")
    with pytest.raises(ImageDecodeError, match="not a readable PDF"):
        decode_image(path)


def test_pdf_needs_pypdfium2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "mark.pdf"
    render_pdf(qr_text(80), out, **PDF_FIELDS)
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # makes `import pypdfium2` fail
    with pytest.raises(ImageDecodeError, match="needs pypdfium2"):
        decode_image(out)


def side_by_side(*texts: str) -> Image.Image:
    images = []
    for text in texts:
        buffer = io.BytesIO()
        qr_matrix(text).save(buffer, kind="png", scale=4, border=QUIET_ZONE)
        buffer.seek(0)
        images.append(Image.open(buffer).convert("L"))
    canvas = Image.new("L", (sum(i.width for i in images), max(i.height for i in images)), 255)
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width
    return canvas


def test_two_different_qr_codes_are_refused() -> None:
    with pytest.raises(ImageDecodeError, match="2 different QR codes"):
        decode_pil(side_by_side(qr_text(60, seed=1), qr_text(60, seed=2)))


def test_the_same_qr_twice_is_one_text() -> None:
    text = qr_text(60, seed=1)
    assert decode_pil(side_by_side(text, text)) == text
