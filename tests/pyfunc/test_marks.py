"""pyfunc.marks: a circle drawn round the digit, a line drawn under it and a form's printed
box go; the digit, and marks that are part of it, stay. MNIST test digits are written here
on paper at 5× (dark ink, JPEG-free PNG), so each test knows where the digit and the mark
are and what the digit alone pre-processes to."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pyfunc import preprocess
from pyfunc.marks import drop_marks
from pyfunc.preprocess import decode_image, pre_process
from pyfunc.segment import find_digits

PAPER, INK, PRINT = 235, 35, 110
SCALE, SIDE = 5, 240
DIGITS = range(20)  # all ten classes appear in the first 20 test digits


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _written(
    digits: list[np.ndarray], side: int = SIDE, width: int = 0
) -> tuple[Image.Image, tuple]:
    """MNIST digits side by side in the middle of a sheet, drawn at SCALE: the sheet and
    the digits' ink box (x0, y0, x1, y1)."""
    size = 28 * SCALE
    ink = np.hstack(
        [np.asarray(Image.fromarray(d).resize((size, size)), np.float32) for d in digits]
    )
    w = max(side, width, ink.shape[1] + 100)
    grey = np.full((side, w), float(PAPER), np.float32)
    oy, ox = (side - size) // 2, (w - ink.shape[1]) // 2
    k = ink / 255
    grey[oy : oy + size, ox : ox + ink.shape[1]] = PAPER * (1 - k) + INK * k
    rows, cols = np.nonzero(k > 0.2)
    box = (ox + cols.min(), oy + rows.min(), ox + cols.max(), oy + rows.max())
    return Image.fromarray(grey.astype(np.uint8)), box


def _normalised(img: Image.Image) -> np.ndarray:
    return pre_process(_png(img))[0, :, :, 0]


def _apart(box: tuple, gap: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    g = gap * (y1 - y0)
    return x0 - g, y0 - g, x1 + g, y1 + g


@pytest.fixture(scope="module")
def digits(mnist) -> list[np.ndarray]:
    return [mnist.x_test[i] for i in DIGITS]


def test_a_circle_round_the_digit_goes(digits: list[np.ndarray]) -> None:
    for digit in digits:
        img, box = _written([digit])
        alone = _normalised(img)
        x0, y0, x1, y1 = _apart(box, 0.2)
        # An ellipse through the corners of a box 1.2 times the digit's: clear of its ink.
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 0.71, (y1 - y0) * 0.71
        ImageDraw.Draw(img).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=INK, width=5)
        assert np.abs(_normalised(img) - alone).mean() < 0.01


def test_a_circle_the_digit_touches_goes(digits: list[np.ndarray]) -> None:
    """Drawn tight, through 0.9 of the ink box's corners, the circle cuts across strokes
    and is one piece with the digit: its band along the fitted ellipse goes, and the
    strokes it touched lose about its width (0.000-0.095 from the digit alone, 0.031 on
    average; with the circle left in, 0.058-0.153, 0.113)."""
    apart = []
    for digit in digits:
        img, (x0, y0, x1, y1) = _written([digit])
        alone = _normalised(img)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = max(x1 - x0, 0.6 * (y1 - y0)) * 0.9 * 0.71, (y1 - y0) * 0.9 * 0.71
        ImageDraw.Draw(img).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=INK, width=5)
        apart.append(float(np.abs(_normalised(img) - alone).mean()))
    assert np.mean(apart) < 0.05
    assert sum(a < 0.06 for a in apart) >= 16


def test_a_line_under_the_digit_goes(digits: list[np.ndarray]) -> None:
    for digit in digits:
        img, (x0, y0, x1, y1) = _written([digit])
        alone = _normalised(img)
        y = y1 + 0.15 * (y1 - y0)
        ImageDraw.Draw(img).line([(x0 - 10, y), (x1 + 10, y + 3)], fill=INK, width=5)
        assert np.abs(_normalised(img) - alone).mean() < 0.01


def test_a_printed_box_the_digit_rests_on_goes_and_the_digit_stays(
    digits: list[np.ndarray],
) -> None:
    """A form's cell, the digit written down to its bottom line: one piece with it. What the
    line covered of a stroke is lost, so the digit comes out a little shorter, scaled and
    placed a little differently (0.005-0.062 from the digit alone). With the box left in,
    the box is what the 28×28 is scaled to: 0.030-0.142, 0.088 on average."""
    apart = []
    for digit in digits:
        img, (x0, y0, x1, y1) = _written([digit])
        alone = _normalised(img)
        g = 0.15 * (y1 - y0)
        ImageDraw.Draw(img).rectangle([x0 - g, y0 - g, x1 + g, y1 + 1], outline=PRINT, width=2)
        apart.append(float(np.abs(_normalised(img) - alone).mean()))
    assert max(apart) < 0.07
    assert np.mean(apart) < 0.04


def test_a_box_apart_from_the_digit_goes(digits: list[np.ndarray]) -> None:
    for digit in digits[:5]:
        img, box = _written([digit])
        alone = _normalised(img)
        ImageDraw.Draw(img).rectangle(_apart(box, 0.15), outline=PRINT, width=2)
        assert np.abs(_normalised(img) - alone).mean() < 0.01


def test_a_circled_number_is_read_as_its_digits(digits: list[np.ndarray]) -> None:
    """The digits' boxes are those of the number alone (the circle left in, it is cut into
    three "digits" of its own arcs)."""
    img, box = _written(digits[:3], side=360, width=720)
    alone = [d.box for d in find_digits(_png(img)).digits]
    x0, y0, x1, y1 = _apart(box, 0.25)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 0.71, (y1 - y0) * 0.71
    ImageDraw.Draw(img).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=INK, width=5)
    assert [d.box for d in find_digits(_png(img)).digits] == alone


def test_a_number_in_a_forms_cells_is_read_as_its_digits(digits: list[np.ndarray]) -> None:
    """One printed cell per digit, as on a form: each cell goes, with the others in view."""
    img, _ = _written(digits[3:6], side=260, width=560)
    alone = [d.box for d in find_digits(_png(img)).digits]
    size, left = 28 * SCALE, (560 - 3 * 28 * SCALE) // 2
    top = (260 - size) // 2
    draw = ImageDraw.Draw(img)
    for k in range(3):
        cell = [left + k * size + 6, top + 6, left + (k + 1) * size - 6, top + size - 6]
        draw.rectangle(cell, outline=PRINT, width=2)
    assert [d.box for d in find_digits(_png(img)).digits] == alone


# --------------------------------------------------------------------------- left as they are


def _ink(img: Image.Image) -> np.ndarray:
    """The ink map this step is given: the pipeline's, with the step itself left out."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preprocess, "drop_marks", lambda ink: ink)
        return decode_image(_png(img))


def _left_alone(img: Image.Image) -> None:
    ink = _ink(img)
    assert drop_marks(ink) is ink


def test_digits_alone_are_left_alone(digits: list[np.ndarray]) -> None:
    for digit in digits:
        _left_alone(_written([digit])[0])


def _sheet() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (SIDE, SIDE), PAPER)
    return img, ImageDraw.Draw(img)


def test_a_zero_with_a_speck_in_it_is_a_zero() -> None:
    img, draw = _sheet()
    draw.ellipse([80, 50, 160, 190], outline=INK, width=8)
    draw.ellipse([115, 115, 123, 123], fill=INK)
    _left_alone(img)


def test_a_zero_over_faint_printed_lines_is_a_zero() -> None:
    """Squared paper: what is left of the printed grid inside a pen's 0 is not writing in a
    ring (it is far fainter than the 0), so the 0 stays."""
    img, draw = _sheet()
    draw.ellipse([80, 50, 160, 190], outline=INK, width=8)
    for y in (90, 130):
        draw.line([(100, y), (140, y)], fill=195, width=2)
    draw.line([(120, 75), (120, 165)], fill=195, width=2)
    _left_alone(img)


def test_a_square_zero_is_no_box() -> None:
    """Four straight thin sides with nothing inside: a digit drawn square, not a form."""
    img, draw = _sheet()
    draw.rectangle([80, 50, 160, 190], outline=INK, width=6)
    _left_alone(img)


def test_a_line_over_the_digit_or_short_under_it_is_kept(digits: list[np.ndarray]) -> None:
    """Only a line under the writing and as wide as most of it is an underline: a bar over
    a digit, or a short dash under it (a broken stroke's piece), may be part of the digit."""
    img, (x0, y0, x1, y1) = _written([digits[0]])
    ImageDraw.Draw(img).line([(x0, y0 - 15), (x1, y0 - 15)], fill=INK, width=5)
    _left_alone(img)
    img, (x0, y0, x1, y1) = _written([digits[0]])
    middle = (x0 + x1) / 2
    ImageDraw.Draw(img).line([(middle - 10, y1 + 15), (middle + 10, y1 + 15)], fill=INK, width=5)
    _left_alone(img)


def test_a_ring_or_line_at_the_frame_is_the_papers_business(digits: list[np.ndarray]) -> None:
    """A mark that runs off the picture is a ruling, a sheet's edge or a shadow: the paper
    steps decide about it, not this one."""
    img, (*_, y1) = _written([digits[0]])
    ImageDraw.Draw(img).line([(0, y1 + 20), (SIDE, y1 + 20)], fill=INK, width=3)
    _left_alone(img)


def test_small_pictures_are_left_alone(digits: list[np.ndarray]) -> None:
    ink = np.zeros((28, 28), np.float32)
    ink[4:24, 4:24] = digits[0][4:24, 4:24] / 255
    assert drop_marks(ink) is ink
