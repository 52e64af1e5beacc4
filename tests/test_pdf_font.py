"""The printable PDF carries its own font: it prints the same on a machine with no CJK font at all.

vimark ships a subset of Noto Sans CJK SC (client/fonts/, made by client/fonts/make_subset.py) and
render.py embeds it in every PDF. These tests read the PDF as a print shop's machine would, with
poppler-utils (pdffonts, pdftoppm; Debian's `apt-get install poppler-utils`, which .ci/run does),
under a fontconfig configuration whose only font directory is empty: a glyph that is not embedded
has nothing to fall back on and would come out as a box or not at all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFont
from reportlab.pdfbase.ttfonts import TTFont

from vimark.client.domain import PLATE_TYPES, parse_plate_number
from vimark.client.errors import VimarkError
from vimark.client.qrimage import decode_image
from vimark.client.render import PDF_CHARACTERS, PDF_FONT, RenderError, render_pdf

PDFFONTS = shutil.which("pdffonts")
PDFTOPPM = shutil.which("pdftoppm")
needs_poppler = pytest.mark.skipif(
    PDFFONTS is None or PDFTOPPM is None,
    reason="pdffonts/pdftoppm not found: install Debian's poppler-utils (.ci/run does)",
)

DPI = 150
PLATE_SIZE = 34.0
"""Point size of the plate line in render.py; the glyph comparison scales the reference to it."""
QR_TEXT = "VM1:" + "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:" * 6  # 280 characters: QR version 10
FIELDS = {"plate_type": "02", "valid_until": "2027-06", "serial": 987654}


@pytest.fixture(autouse=True)
def shipped_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIMARK_PDF_FONT", raising=False)  # the override would replace the shipped font


@pytest.fixture(scope="module")
def no_system_fonts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose fontconfig knows no font at all (its one font directory is empty)."""
    root = tmp_path_factory.mktemp("fontconfig")
    (root / "fonts").mkdir()
    config = root / "fonts.conf"
    config.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n'
        f"<fontconfig><dir>{root / 'fonts'}</dir><cachedir>{root / 'cache'}</cachedir></fontconfig>\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("FONTCONFIG")}
    env["FONTCONFIG_FILE"] = str(config)
    fc_list = shutil.which("fc-list")
    if fc_list is not None:  # the library poppler uses agrees: no font, Chinese or other
        listed = subprocess.run([fc_list], env=env, capture_output=True, text=True, timeout=60, check=True)
        assert listed.stdout.strip() == "", listed.stdout
    return env


def pdf_of(tmp_path: Path, plate_number: str, name: str = "mark") -> Path:
    out = tmp_path / f"{name}.pdf"
    render_pdf(QR_TEXT, out, plate_number=plate_number, **FIELDS)  # type: ignore[arg-type]
    return out


def raster(pdf: Path, env: dict[str, str]) -> Path:
    assert PDFTOPPM is not None
    stem = pdf.with_suffix("")
    done = subprocess.run(
        [PDFTOPPM, "-r", str(DPI), "-png", "-singlefile", str(pdf), str(stem)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return stem.with_suffix(".png")


def grey(png: Path) -> Image.Image:
    with Image.open(png) as image:
        return image.convert("L")


def fonts_in(pdf: Path, env: dict[str, str]) -> list[dict[str, str]]:
    """pdffonts' table, one dict per font (name, type, encoding, emb, sub, uni)."""
    assert PDFFONTS is not None
    done = subprocess.run([PDFFONTS, str(pdf)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, rule, *rows = done.stdout.splitlines()
    assert header.split()[:6] == ["name", "type", "encoding", "emb", "sub", "uni"], header
    # The rule under the header ("----- ------ ...") gives the columns; a name or type may hold spaces.
    spans = [match.span() for match in re.finditer(r"-+", rule)][:6]
    columns = header.split()[:6]
    return [{key: row[start:end].strip() for key, (start, end) in zip(columns, spans, strict=True)} for row in rows]


def shipped_postscript_name() -> str:
    name = TTFont("shipped", str(PDF_FONT)).face.name
    return name.decode() if isinstance(name, bytes) else str(name)


# --- the font file and its character set ---------------------------------------------------------


def test_shipped_font_holds_exactly_the_page_characters() -> None:
    font = TTFont("shipped", str(PDF_FONT))
    # reportlab's view of the cmap: glyph 0 is .notdef (U+FFFF ends a format-4 cmap), and reportlab
    # adds U+00A0 (no-break space) as another name for the space.
    mapped = {chr(code) for code, glyph in font.face.charToGlyph.items() if glyph != 0} - {"\u00a0"}
    assert "".join(sorted(mapped)) == PDF_CHARACTERS, (
        "client/fonts is out of date: run client/fonts/make_subset.py (see client/fonts/README.md)"
    )
    assert (PDF_FONT.parent / "OFL.txt").is_file() and (PDF_FONT.parent / "README.md").is_file()
    assert PDF_FONT.stat().st_size < 64 * 1024


def plates_the_domain_accepts() -> Iterator[str]:
    """Every plate one character away from a sample of each shape, as parse_plate_number returns it."""
    # ASCII, the CJK Unified Ideographs block, full-width forms (which parse_plate_number may normalise)
    candidates = [chr(code) for code in (*range(0x20, 0x7F), *range(0x4E00, 0xA000), *range(0xFF01, 0xFF5F))]
    for sample in ("闽C12345", "使123456", "123456使", "沪A1234领"):
        for position in range(len(sample)):
            for character in candidates:
                try:
                    yield parse_plate_number(sample[:position] + character + sample[position + 1 :])
                except VimarkError:
                    continue


def test_every_character_a_valid_plate_or_plate_type_can_hold_is_in_the_font() -> None:
    used = {character for plate in plates_the_domain_accepts() for character in plate}
    used |= {character for code in PLATE_TYPES for character in code}
    assert len(used) > 40  # provinces, 使 领, suffixes, letters, digits
    assert "".join(sorted(used - set(PDF_CHARACTERS))) == ""


@pytest.mark.parametrize(
    ("field", "value", "character"),
    [("plate_number", "台A12345", "台"), ("plate_number", "闽C1234é", "é"), ("plate_type", "０2", "０")],
)
def test_a_character_outside_the_font_is_refused_not_boxed(
    tmp_path: Path, field: str, value: str, character: str
) -> None:
    out = tmp_path / "mark.pdf"
    fields: dict[str, str] = {"plate_number": "闽C12345", "plate_type": "02", "valid_until": "2027-06"}
    fields[field] = value
    with pytest.raises(RenderError) as caught:
        render_pdf(QR_TEXT, out, **fields)  # type: ignore[arg-type]
    message = str(caught.value)
    assert field in message and repr(character) in message and f"U+{ord(character):04X}" in message
    assert not out.exists()


# --- what a machine without CJK fonts prints ---------------------------------------------------------


@needs_poppler
@pytest.mark.parametrize("plate", ["闽C12345", "使123456", "沪A1234领", "粤B1234挂", "京AD12345"])
def test_every_font_in_the_pdf_is_embedded_and_it_is_the_shipped_subset(
    tmp_path: Path, no_system_fonts: dict[str, str], plate: str
) -> None:
    fonts = fonts_in(pdf_of(tmp_path, plate), no_system_fonts)
    assert fonts, "pdffonts lists no font"
    for font in fonts:
        assert font["emb"] == "yes", f"{font['name']} is not embedded"
        assert font["sub"] == "yes", f"{font['name']} is embedded whole, not as a subset"
        assert re.fullmatch(rf"[A-Z]{{6}}\+{re.escape(shipped_postscript_name())}", font["name"]), font["name"]


@needs_poppler
def test_the_qr_reads_back_from_the_printed_page(tmp_path: Path, no_system_fonts: dict[str, str]) -> None:
    assert decode_image(raster(pdf_of(tmp_path, "闽C12345"), no_system_fonts)) == QR_TEXT


def glyph_shape(image: Image.Image) -> npt.NDArray[np.bool_]:
    """The ink of a glyph image (dark on light), cropped to its bounding box, on a 32 x 32 grid."""
    ink = image.point(lambda value: 255 if value < 128 else 0)
    box = ink.getbbox()
    assert box is not None, "no ink where the glyph should be (drawn blank)"
    small = image.crop(box).resize((32, 32), Image.Resampling.BOX)
    return np.asarray(small) < 128


def overlap(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Intersection over union of two ink masks: 1.0 for the same shape."""
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def reference(character: str, size_px: float) -> npt.NDArray[np.bool_]:
    """`character` as Pillow (FreeType) draws it from the shipped font file."""
    font = ImageFont.truetype(str(PDF_FONT), size=round(size_px))
    canvas = Image.new("L", (round(size_px * 3), round(size_px * 3)), 255)
    ImageDraw.Draw(canvas).text((size_px, size_px * 2), character, font=font, fill=0, anchor="ls")
    return glyph_shape(canvas)


@needs_poppler
def test_the_province_is_printed_as_itself_not_as_a_box(tmp_path: Path, no_system_fonts: dict[str, str]) -> None:
    # Two pages that differ in the province only (every ideograph is one em wide, so nothing else moves).
    font = TTFont("shipped", str(PDF_FONT))
    assert font.stringWidth("闽", PLATE_SIZE) == font.stringWidth("京", PLATE_SIZE)
    min_page = grey(raster(pdf_of(tmp_path, "闽C12345", "min"), no_system_fonts))
    jing_page = grey(raster(pdf_of(tmp_path, "京C12345", "jing"), no_system_fonts))

    # 1. The pixels where they differ are one glyph-sized patch: the province. A box (or nothing)
    #    for both characters would leave no difference at all.
    differs = ImageChops.difference(min_page, jing_page).point(lambda value: 255 if value > 64 else 0)
    box = differs.getbbox()
    assert box is not None, "闽 and 京 print the same: the province is not drawn from a real glyph"
    em = PLATE_SIZE * DPI / 72
    left, top, right, bottom = box
    assert 0.5 * em < right - left < 1.05 * em and 0.5 * em < bottom - top < 1.05 * em, box
    region = (left - 3, top - 3, right + 3, bottom + 3)
    printed_min = glyph_shape(min_page.crop(region))
    printed_jing = glyph_shape(jing_page.crop(region))

    # 2. Each printed glyph has the shape the font file gives that character (drawn by Pillow), and
    #    clearly not the shape of the other one, of the font's missing-glyph box (.notdef, which a
    #    character outside the cmap, such as 一, gets) or of a plain box outline.
    assert "一" not in PDF_CHARACTERS
    box_outline = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(box_outline).rectangle((10, 5, 75, 95), outline=0, width=5)
    shapes = {
        "闽": reference("闽", em),
        "京": reference("京", em),
        "the font's missing-glyph box": reference("一", em),
        "a box outline": glyph_shape(box_outline),
    }
    for printed, character in ((printed_min, "闽"), (printed_jing, "京")):
        match = overlap(printed, shapes[character])
        assert match > 0.6, f"the printed {character} does not look like the font's {character} ({match:.2f})"
        for name, shape in shapes.items():
            if name != character:
                assert overlap(printed, shape) < match - 0.3, f"the printed {character} looks like {name}"
