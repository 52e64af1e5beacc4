"""Read the vimark QR text back from a picture: a rendered PNG, a phone photo, a scan or a PDF.

This is the scan side of `vimark verify --image FILE`. It returns the QR text only; whether that text
is a genuine mark is for the certificate decoder and the verifier to say.
"""

from __future__ import annotations

from pathlib import Path

import zxingcpp
from PIL import Image, ImageOps, UnidentifiedImageError

from vimark.client.errors import VimarkError

__all__ = ["PDF_DPI", "ImageDecodeError", "decode_image", "decode_pil"]

PDF_DPI = 200
"""Resolution at which page 1 of a PDF is rasterised: ~8 pixels per module for a 60 mm version-10 QR."""
_QR_CODES = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
_SMALL_SIDE = 400
"""Images smaller than this (in pixels) are also tried enlarged: 1-2 pixel modules defeat the detector."""


class ImageDecodeError(VimarkError):
    """A file or picture from which no single QR text can be read."""

    reason = "IMAGE_UNREADABLE"


def decode_image(path: Path) -> str:
    """The text of the one QR code in the image (PNG, JPEG, any Pillow format) or page 1 of a PDF."""
    try:
        with path.open("rb") as file:
            is_pdf = file.read(5) == b"%PDF-"
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".svg":
        # A vector drawing, not a picture: reading it would need an SVG renderer vimark does not carry.
        raise ImageDecodeError(
            f"{path} is an SVG drawing: --image reads pictures (PNG, JPEG, any Pillow format) and PDF; "
            "make a PNG with `vimark render QR_TEXT --out mark.png`, or give the QR text itself"
        )
    if is_pdf or path.suffix.lower() == ".pdf":
        image = _rasterise_pdf(path)
    else:
        try:
            with Image.open(path) as opened:
                image = _to_grey(ImageOps.exif_transpose(opened))
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ImageDecodeError(f"{path} is not an image Pillow can read") from exc
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt image data
            raise ImageDecodeError(f"{path} is not a readable image: {exc}") from exc
    return _decode(image, source=str(path))


def decode_pil(image: Image.Image) -> str:
    """The text of the one QR code in a Pillow image."""
    try:
        grey = _to_grey(image)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"image cannot be converted to greyscale: {exc}") from exc
    return _decode(grey, source="the image")


def _decode(grey: Image.Image, *, source: str) -> str:
    # 1. Look for QR codes as they are; 2. if none, with a global threshold (uneven, blurry photos);
    # 3. if the picture is small, enlarged smoothly (helps modules under ~2 pixels, e.g. a thumbnail).
    texts: set[str] = set()
    for binarizer in (zxingcpp.Binarizer.LocalAverage, zxingcpp.Binarizer.GlobalHistogram):
        texts = _read(grey, binarizer)
        if texts:
            break
    if not texts and min(grey.size) < _SMALL_SIDE:
        factor = -(-_SMALL_SIDE // max(1, min(grey.size)))
        enlarged = grey.resize((grey.width * factor, grey.height * factor), Image.Resampling.BICUBIC)
        texts = _read(enlarged, zxingcpp.Binarizer.LocalAverage)
    if not texts:
        raise ImageDecodeError(f"no readable QR code found in {source}")
    if len(texts) > 1:
        raise ImageDecodeError(f"{len(texts)} different QR codes found in {source}; show exactly one vimark QR")
    return texts.pop()


def _read(grey: Image.Image, binarizer: zxingcpp.Binarizer) -> set[str]:
    try:
        barcodes = zxingcpp.read_barcodes(
            grey, formats=_QR_CODES, text_mode=zxingcpp.TextMode.Plain, binarizer=binarizer
        )
    except (ValueError, RuntimeError) as exc:
        raise ImageDecodeError(f"QR decoder rejected the image: {exc}") from exc
    return {barcode.text for barcode in barcodes if barcode.valid}


def _to_grey(image: Image.Image) -> Image.Image:
    """8-bit greyscale; transparent areas become white (a QR with a transparent background has no light)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        background.alpha_composite(rgba)
        image = background
    return image.convert("L")


def _rasterise_pdf(path: Path) -> Image.Image:
    try:
        import pypdfium2
    except ImportError as exc:
        raise ImageDecodeError(
            f"{path}: reading a QR from a PDF needs pypdfium2 (pip install pypdfium2), or give a PNG/JPEG image instead"
        ) from exc
    try:
        document = pypdfium2.PdfDocument(path)
        try:
            if len(document) == 0:
                raise ImageDecodeError(f"{path} has no pages")
            bitmap = document[0].render(scale=PDF_DPI / 72, grayscale=True)
            return _to_grey(bitmap.to_pil()).copy()
        finally:
            document.close()
    except pypdfium2.PdfiumError as exc:
        raise ImageDecodeError(f"{path} is not a readable PDF: {exc}") from exc
