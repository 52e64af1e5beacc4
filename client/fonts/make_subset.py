"""Make VimarkPageSansSC-Regular.ttf, the font of vimark's printable PDF, from Noto Sans CJK SC.

    apt-get install fonts-noto-cjk     # Noto Sans CJK 2.004, SIL Open Font License 1.1 (CFF outlines, a .ttc)
    pip install fonttools              # for this script only; vimark does not need it at run time
    python client/fonts/make_subset.py [--source PATH/NotoSansCJK-Regular.ttc]

The character set is `vimark.client.render.PDF_CHARACTERS`, which render.py derives from the page's
own label strings and the plate alphabet, so the font and the page cannot drift apart (and
tests/test_pdf_font.py checks that the committed font holds exactly that set). Steps:

1. Take the "Noto Sans CJK SC" face (simplified Chinese glyph forms) out of the collection.
2. Subset it to PDF_CHARACTERS with fontTools' subsetter: no layout tables (reportlab applies none),
   no hinting, the .notdef box kept.
3. Convert the CFF (cubic) outlines to TrueType (quadratic, at most 1 unit in 1000 off): reportlab
   embeds only TrueType-outline fonts.
4. Rename it (a Modified Version under the OFL; "Noto" is Google's trademark), keeping the copyright
   and licence records, and write it with the source's timestamp so a rerun gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fontTools import subset  # type: ignore[import-untyped, import-not-found, unused-ignore]
from fontTools.pens.cu2quPen import Cu2QuPen  # type: ignore[import-untyped, import-not-found, unused-ignore]
from fontTools.pens.ttGlyphPen import TTGlyphPen  # type: ignore[import-untyped, import-not-found, unused-ignore]
from fontTools.ttLib import TTFont, newTable  # type: ignore[import-untyped, import-not-found, unused-ignore]

from vimark.client.render import PDF_CHARACTERS, PDF_FONT

SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SOURCE_FACE = "NotoSansCJKsc-Regular"
FAMILY = "Vimark Page Sans SC"
POSTSCRIPT_NAME = PDF_FONT.stem  # VimarkPageSansSC-Regular
MAX_ERROR = 1.0  # font units (1000 per em): how far a quadratic outline may stray from the cubic one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"Noto Sans CJK collection (default {SOURCE})")
    parser.add_argument("--out", type=Path, default=PDF_FONT, help=f"where to write (default {PDF_FONT})")
    args = parser.parse_args(argv)

    # 1. The simplified-Chinese face of the collection.
    font = _face(args.source, SOURCE_FACE)
    missing = [c for c in PDF_CHARACTERS if ord(c) not in font.getBestCmap()]
    if missing:
        print(f"{args.source} lacks {''.join(missing)!r}", file=sys.stderr)
        return 1
    version = font["name"].getDebugName(5)

    # 2. Only the page's characters.
    options = subset.Options()
    options.layout_features = []
    options.drop_tables += ["GSUB", "GPOS", "GDEF", "BASE", "vhea", "vmtx", "VORG", "DSIG"]
    options.hinting = False
    options.notdef_outline = True
    options.glyph_names = False
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]
    options.name_languages = [0x409]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[ord(c) for c in PDF_CHARACTERS])
    subsetter.subset(font)

    # 3. TrueType outlines.
    _cff_to_truetype(font)

    # 4. Its own name, the source's copyright and licence.
    names = font["name"]
    for name_id, value in (
        (1, FAMILY),
        (3, f"{POSTSCRIPT_NAME}; subset of {SOURCE_FACE} {version.split(';')[0]}"),
        (4, f"{FAMILY} Regular"),
        (5, f"{version.split(';')[0]}; vimark subset of {SOURCE_FACE}, {len(PDF_CHARACTERS)} characters"),
        (6, POSTSCRIPT_NAME),
    ):
        names.setName(value, name_id, 3, 1, 0x409)
    font.save(str(args.out))
    print(f"wrote {args.out}: {len(PDF_CHARACTERS)} characters, {args.out.stat().st_size} bytes")
    return 0


def _face(collection: Path, postscript_name: str) -> Any:
    for number in range(64):
        try:
            face = TTFont(str(collection), fontNumber=number, recalcTimestamp=False, recalcBBoxes=True)
        except Exception:  # past the last face of the collection
            break
        if face["name"].getDebugName(6) == postscript_name:
            return face
    raise SystemExit(f"{collection} has no face named {postscript_name}")


def _cff_to_truetype(font: Any) -> None:
    """Replace the CFF table by glyf/loca (after fontTools' Snippets/otf2ttf.py)."""
    order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyph_set)
        glyph_set[name].draw(Cu2QuPen(pen, MAX_ERROR, reverse_direction=True))
        glyf.glyphs[name] = pen.glyph()
    font["loca"] = newTable("loca")
    font["glyf"] = glyf
    del font["CFF "]
    font.sfntVersion = "\x00\x01\x00\x00"
    glyf.compile(font)
    hmtx = font["hmtx"]
    for name, glyph in glyf.glyphs.items():
        advance, _ = hmtx.metrics[name]
        hmtx.metrics[name] = (advance, getattr(glyph, "xMin", 0))  # TrueType: left side bearing = xMin

    maxp = newTable("maxp")
    maxp.tableVersion = 0x00010000
    maxp.maxZones = 1
    for field in (
        "maxTwilightPoints",
        "maxStorage",
        "maxFunctionDefs",
        "maxInstructionDefs",
        "maxStackElements",
        "maxSizeOfInstructions",
        "maxComponentElements",
    ):
        setattr(maxp, field, 0)
    font["maxp"] = maxp
    maxp.compile(font)  # counts glyphs, points and contours

    post = font["post"]
    post.formatType = 3.0  # no glyph names: the PDF and the page need none
    post.extraNames = []
    post.mapping = {}
    post.glyphOrder = order
    font["head"].glyphDataFormat = 0
    font["head"].indexToLocFormat = 0


if __name__ == "__main__":
    sys.exit(main())
