"""pyfunc.segment on white ink on a dark ground: a 0 is a digit, not a sheet of paper."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from pyfunc import segment


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_a_white_zero_between_digits_on_black_is_not_taken_for_a_sheet():
    # A bold white 0, its hole filled, is bright, convex, wide and straight-edged enough to
    # pass for a sheet on a desk; the picture was cropped to it and the 1s were lost.
    img = Image.new("L", (300, 140), 0)
    draw = ImageDraw.Draw(img)
    for x in (30, 250):
        draw.line([(x, 20), (x, 120)], fill=255, width=10)
    draw.polygon([(100, 25), (200, 20), (205, 120), (105, 125)], outline=255, width=16)
    found = segment.find_digits(_png(img))
    assert len(found) == 3
    assert found.boxes[1][2] > 80  # the 0 whole, not its hole
