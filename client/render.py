"""Draw a vimark QR text as a PNG or SVG (screen, offline image) or a printable A4 PDF (print).

All three presentations carry the same QR: alphanumeric mode, error level M, version <= 10
(architecture principle 6), with a 4-module quiet zone. `qr_matrix` builds and checks it; nothing
is written when the text does not fit.
"""

from __future__ import annotations

import functools
import os
import re
import string
from collections.abc import Iterator
from pathlib import Path

import segno
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from vimark.client.domain import PROVINCES
from vimark.client.errors import VimarkError

__all__ = [
    "ERROR_LEVEL",
    "MAX_VERSION",
    "PDF_CHARACTERS",
    "PDF_FONT",
    "QUIET_ZONE",
    "RenderError",
    "qr_matrix",
    "render",
    "render_pdf",
    "render_png",
    "render_svg",
]

MAX_VERSION = 10
"""Largest QR version vimark emits (57 x 57 modules): what phone screens and cheap printers show reliably."""
ERROR_LEVEL = "M"
QUIET_ZONE = 4
"""Light border around the symbol, in modules, as ISO/IEC 18004 requires."""

PDF_QR_WIDTH_MM = 60.0
"""Printed width of the symbol itself (quiet zone excluded): ~1.05 mm per module at version 10."""
PDF_FONT = Path(__file__).resolve().parent / "fonts" / "VimarkPageSansSC-Regular.ttf"
"""The page's one font, shipped with vimark and embedded (subset) in every PDF: a subset of Noto Sans CJK SC
(SIL Open Font License 1.1) holding exactly PDF_CHARACTERS. fonts/README.md says how it is made."""
PDF_FONT_ENV = "VIMARK_PDF_FONT"
"""Optional override: the path of another TrueType font (glyf outlines) to embed instead."""

# The page's fixed text. PDF_CHARACTERS (and so the shipped font, fonts/make_subset.py) is derived from these.
_TITLE = "机动车检验标志电子凭证"
_SUBTITLE = "Electronic motor-vehicle inspection mark"
_PLATE_TYPE_LABEL = "号牌种类 Plate type: "
_VALID_UNTIL_LABEL = "检验有效期至 Valid until: "
_SERIAL_LABEL = "序列号 Serial: "
_CAPTION = "扫码核验 Scan to verify"
_LABELS = (_TITLE, _SUBTITLE, _PLATE_TYPE_LABEL, _VALID_UNTIL_LABEL, _SERIAL_LABEL, _CAPTION)
# What the fields can hold (GA 36-2018, docs/domain.md "Plates"): a province (or 使/领 on diplomatic plates),
# capital letters and digits, a trailer/learner/police/Hong Kong/Macao suffix; plate type, month and serial
# are digits and "-"; a VIN (not on the page today) is capitals and digits too.
_PLATE_CHARACTERS = PROVINCES + "使领" + "挂学警港澳" + string.ascii_uppercase + string.digits
PDF_CHARACTERS = "".join(sorted(set(_PLATE_CHARACTERS + "-" + "".join(_LABELS))))
"""Every character the printable page can draw, sorted: the shipped font's character set, exactly."""
_VALID_UNTIL = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_FORMATS = (".png", ".svg", ".pdf")


class RenderError(VimarkError):
    """A QR text or a presentation field that cannot be drawn, or an output that cannot be written."""

    reason = "RENDER"


def qr_matrix(qr_text: str) -> segno.QRCode:
    """The QR for `qr_text`: alphanumeric mode, error level M, smallest version, at most MAX_VERSION."""
    try:
        qr = segno.make_qr(qr_text, error="m", mode="alphanumeric", boost_error=False)
    except segno.DataOverflowError as exc:
        raise RenderError(f"QR text of {len(qr_text)} characters does not fit any QR version at error level M") from exc
    except ValueError as exc:
        raise RenderError(
            "QR text must be non-empty and use only the QR alphanumeric alphabet (0-9 A-Z space $ % * + - . / :)"
        ) from exc
    version = qr.version  # an int for a QR code (a str such as "M4" only for Micro QR)
    if not isinstance(version, int) or version > MAX_VERSION:
        raise RenderError(
            f"QR text of {len(qr_text)} characters needs QR version {version}; "
            f"vimark marks must fit version {MAX_VERSION} at error level {ERROR_LEVEL}"
        )
    return qr


def render_png(qr_text: str, path: Path, *, scale: int = 8) -> None:
    """Write the QR as a black-on-white PNG, `scale` pixels per module, with its quiet zone."""
    _save(qr_matrix(qr_text), path, kind="png", scale=scale)


def render_svg(qr_text: str, path: Path, *, scale: int = 8) -> None:
    """Write the QR as an SVG on an opaque white background (dark-mode viewers keep the contrast)."""
    _save(qr_matrix(qr_text), path, kind="svg", scale=scale)


def render_pdf(
    qr_text: str,
    path: Path,
    *,
    plate_number: str,
    plate_type: str,
    valid_until: str,
    serial: int | None = None,
) -> None:
    """Write the printable A4 page of a mark: heading, plate, plate type, valid-until, serial, QR.

    All text is drawn in one embedded font (PDF_FONT, or $VIMARK_PDF_FONT), so the page looks the same
    in every reader and needs no font on the machine that prints it.
    """
    qr = qr_matrix(qr_text)
    for field, value in (("plate_number", plate_number), ("plate_type", plate_type)):
        if not value.strip():
            raise RenderError(f"{field} is required for a PDF")
    if not _VALID_UNTIL.fullmatch(valid_until):
        raise RenderError(f"valid_until must be YYYY-MM, got {valid_until!r}")
    font = _page_font()
    lines = [f"{_PLATE_TYPE_LABEL}{plate_type}", f"{_VALID_UNTIL_LABEL}{valid_until}"]
    if serial is not None:
        lines.append(f"{_SERIAL_LABEL}{serial}")
    # A character the font lacks would be drawn as its empty box: refuse it before anything is written.
    # (Plate numbers and types are validated long before this; this is the guard behind them.)
    fixed = "".join((_TITLE, _SUBTITLE, *lines, _CAPTION))  # the labels too: a VIMARK_PDF_FONT may lack them
    for field, text in (("plate_number", plate_number), ("plate_type", plate_type), ("page text", fixed)):
        _require_glyphs(font, field, text)

    page_width, page_height = A4
    # initialFontName: otherwise the page starts in Helvetica, a font the PDF would name but not embed.
    canvas = Canvas(str(path), pagesize=A4, invariant=True, initialFontName=font.fontName)
    canvas.setTitle(f"{_TITLE} {plate_number}")
    canvas.setAuthor("vimark")
    canvas.setSubject("Electronic motor-vehicle inspection mark")

    centre = page_width / 2
    y = page_height - 35 * mm
    _centred_text(canvas, centre, y, _TITLE, font=font, size=22)
    y -= 8 * mm
    _centred_text(canvas, centre, y, _SUBTITLE, font=font, size=11)
    y -= 20 * mm
    _centred_text(canvas, centre, y, plate_number, font=font, size=34)
    y -= 14 * mm
    for line in lines:
        _centred_text(canvas, centre, y, line, font=font, size=14)
        y -= 8 * mm

    # The symbol, as filled rectangles (one per horizontal run of dark modules) in a single path:
    # abutting parts of one path leave no hairline seams when rasterised. The quiet zone is left blank.
    columns, rows = qr.symbol_size(scale=1, border=0)
    module = PDF_QR_WIDTH_MM * mm / columns
    left = centre - columns * module / 2
    top = y - QUIET_ZONE * module
    shape = canvas.beginPath()
    for row, start, length in _dark_runs(qr):
        shape.rect(left + start * module, top - (row + 1) * module, length * module, module)
    canvas.setFillColorRGB(0, 0, 0)
    canvas.drawPath(shape, stroke=0, fill=1)
    caption_y = top - (rows + QUIET_ZONE) * module - 4 * mm
    _centred_text(canvas, centre, caption_y, _CAPTION, font=font, size=11)
    try:
        canvas.save()
    except OSError as exc:
        raise RenderError(f"cannot write {path}: {exc}") from exc


def render(
    qr_text: str,
    path: Path,
    *,
    scale: int = 8,
    plate_number: str | None = None,
    plate_type: str | None = None,
    valid_until: str | None = None,
    serial: int | None = None,
) -> None:
    """Render in the format named by the extension of `path` (.png, .svg or .pdf).

    `scale` applies to PNG and SVG; the plate fields to PDF, which requires plate_number, plate_type
    and valid_until.
    """
    suffix = path.suffix.lower()
    if suffix == ".png":
        render_png(qr_text, path, scale=scale)
    elif suffix == ".svg":
        render_svg(qr_text, path, scale=scale)
    elif suffix == ".pdf":
        if plate_number is None or plate_type is None or valid_until is None:
            fields = {"plate_number": plate_number, "plate_type": plate_type, "valid_until": valid_until}
            missing = ", ".join(name for name, value in fields.items() if value is None)
            raise RenderError(f"a PDF needs {missing}")
        render_pdf(
            qr_text,
            path,
            plate_number=plate_number,
            plate_type=plate_type,
            valid_until=valid_until,
            serial=serial,
        )
    else:
        named = f"extension {suffix!r}" if suffix else "no extension"
        raise RenderError(f"cannot render {path.name}: {named}; use one of {', '.join(_FORMATS)}")


def _save(qr: segno.QRCode, path: Path, *, kind: str, scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise RenderError(f"scale must be a positive whole number of pixels per module, got {scale!r}")
    try:
        qr.save(str(path), kind=kind, scale=scale, border=QUIET_ZONE, dark="#000", light="#fff")
    except OSError as exc:
        raise RenderError(f"cannot write {path}: {exc}") from exc


def _centred_text(canvas: Canvas, x: float, y: float, text: str, *, font: TTFont, size: float) -> None:
    canvas.setFont(font.fontName, size)
    canvas.drawCentredString(x, y, text)


def _dark_runs(qr: segno.QRCode) -> Iterator[tuple[int, int, int]]:
    """(row, first column, length) of every horizontal run of dark modules, quiet zone excluded."""
    for row, modules in enumerate(qr.matrix_iter(scale=1, border=0)):
        start = None
        for column, dark in enumerate((*modules, 0)):
            if dark and start is None:
                start = column
            elif not dark and start is not None:
                yield row, start, column - start
                start = None


def _page_font() -> TTFont:
    """The font the page is drawn in: $VIMARK_PDF_FONT if set, else the shipped PDF_FONT."""
    configured = os.environ.get(PDF_FONT_ENV)
    if configured:
        try:
            return _truetype_font(configured)
        except Exception as exc:  # reportlab raises assorted errors (TTFError, OSError) for bad files
            raise RenderError(f"{PDF_FONT_ENV}={configured}: not a usable TrueType font ({exc})") from exc
    try:
        return _truetype_font(str(PDF_FONT))
    except Exception as exc:  # a broken installation: the font is package data
        raise RenderError(f"vimark's PDF font {PDF_FONT} cannot be loaded ({exc}); reinstall vimark") from exc


@functools.cache
def _truetype_font(path: str) -> TTFont:
    font = TTFont(f"vimark-page-{Path(path).stem}", path, subfontIndex=0)
    pdfmetrics.registerFont(font)
    return font


def _require_glyphs(font: TTFont, field: str, text: str) -> None:
    """Refuse `text` if `font` has no glyph for one of its characters (it would print as a box)."""
    glyphs = font.face.charToGlyph
    for character in dict.fromkeys(text):
        if glyphs.get(ord(character), 0) == 0:  # glyph 0 is .notdef, the box
            raise RenderError(
                f"{field} {text!r}: the PDF font {Path(font.face.filename).name} has no glyph for "
                f"{character!r} (U+{ord(character):04X}), which would print as an empty box"
            )
