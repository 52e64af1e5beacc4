"""Draw a vimark QR text as a PNG or SVG (screen, offline image) or a printable A4 PDF (print).

All three presentations carry the same QR: alphanumeric mode, error level M, version <= 10
(architecture principle 6), with a 4-module quiet zone. `qr_matrix` builds and checks it; nothing
is written when the text does not fit.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import segno
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from vimark.client.errors import VimarkError

__all__ = [
    "ERROR_LEVEL",
    "MAX_VERSION",
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
PDF_FONT_ENV = "VIMARK_PDF_FONT"
_CID_FONT = "STSong-Light"
_CJK_FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)
_VALID_UNTIL = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_FORMATS = (".png", ".svg", ".pdf")
_ASCII = frozenset(chr(code) for code in range(0x20, 0x7F))
_RUNS = re.compile(r"[\x20-\x7e]+|[^\x20-\x7e]+")


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
    """Write the printable A4 page of a mark: heading, plate, plate type, valid-until, serial, QR."""
    qr = qr_matrix(qr_text)
    for field, value in (("plate_number", plate_number), ("plate_type", plate_type)):
        if not value.strip():
            raise RenderError(f"{field} is required for a PDF")
    if not _VALID_UNTIL.fullmatch(valid_until):
        raise RenderError(f"valid_until must be YYYY-MM, got {valid_until!r}")
    font = _cjk_font()
    page_width, page_height = A4
    canvas = Canvas(str(path), pagesize=A4, invariant=True)
    canvas.setTitle(f"机动车检验标志电子凭证 {plate_number}")
    canvas.setAuthor("vimark")
    canvas.setSubject("Electronic motor-vehicle inspection mark")

    centre = page_width / 2
    y = page_height - 35 * mm
    _centred_text(canvas, centre, y, "机动车检验标志电子凭证", cjk=font, size=22)
    y -= 8 * mm
    _centred_text(canvas, centre, y, "Electronic motor-vehicle inspection mark", cjk=font, size=11)
    y -= 20 * mm
    _centred_text(canvas, centre, y, plate_number, cjk=font, size=34)
    y -= 14 * mm
    lines = [f"号牌种类 Plate type: {plate_type}", f"检验有效期至 Valid until: {valid_until}"]
    if serial is not None:
        lines.append(f"序列号 Serial: {serial}")
    for line in lines:
        _centred_text(canvas, centre, y, line, cjk=font, size=14)
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
    _centred_text(canvas, centre, caption_y, "扫码核验 Scan to verify", cjk=font, size=11)
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


def _centred_text(canvas: Canvas, x: float, y: float, text: str, *, cjk: str, size: float) -> None:
    """Draw `text` centred on x: printable ASCII in Helvetica, everything else in the `cjk` font.

    The reader's substitute for a non-embedded CJK font often has poor Latin glyphs, so ASCII runs
    (digits, the English labels) use a standard PDF font. A lone CJK character drawn on its own is
    dropped by some text extractors (pdfium, for STSong-Light), so a line with one, such as a plate
    number 闽C12345, is drawn entirely in the CJK font and stays searchable.
    """
    parts = _RUNS.findall(text)
    if any(len(part) == 1 and part not in _ASCII for part in parts):
        parts = [text]
    runs = [(run, "Helvetica" if run[0] in _ASCII else cjk) for run in parts]
    width = sum(pdfmetrics.stringWidth(run, font, size) for run, font in runs)
    cursor = x - width / 2
    for run, font in runs:
        canvas.setFont(font, size)
        canvas.drawString(cursor, y, run)
        cursor += pdfmetrics.stringWidth(run, font, size)


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


def _cjk_font() -> str:
    """Name of the font for Chinese text: $VIMARK_PDF_FONT, else a common system font, else STSong-Light.

    A TrueType font is embedded (subset), so the page prints the same everywhere. STSong-Light is one
    of the PDF reader's standard CJK fonts: nothing is embedded and the reader supplies the glyphs.
    """
    configured = os.environ.get(PDF_FONT_ENV)
    if configured:
        try:
            return _truetype_font(configured)
        except Exception as exc:  # reportlab raises assorted errors (TTFError, OSError) for bad files
            raise RenderError(f"{PDF_FONT_ENV}={configured}: not a usable TrueType font ({exc})") from exc
    for candidate in _CJK_FONT_CANDIDATES:
        if candidate.is_file():
            try:
                return _truetype_font(str(candidate))
            except Exception:  # e.g. CFF-outline OpenType, which reportlab cannot embed; try the next
                continue
    return _cid_font()


@functools.cache
def _truetype_font(path: str) -> str:
    name = f"vimark-cjk-{Path(path).stem}"
    pdfmetrics.registerFont(TTFont(name, path, subfontIndex=0))
    return name


@functools.cache
def _cid_font() -> str:
    pdfmetrics.registerFont(UnicodeCIDFont(_CID_FONT))
    return _CID_FONT
