"""pyfunc.paper: printed rulings go and the strokes stay; what a picture without a digit is
called. Pictures are drawn here, so each test knows where the rulings and the strokes are."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pyfunc.errors import NoDigit
from pyfunc.paper import find_page, pad_cut_ink
from pyfunc.preprocess import decode_image, decode_images, pre_process
from training.variants import VARIANTS, thick

PAPER, RULING, INK = 235, 160, 40
SPACING = 20


def _grey(data: bytes) -> np.ndarray:
    """The grey picture pre-processing starts from (paper bright), before any paper step."""
    return decode_images([data])[0].grey


def _png(grey: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _ruled(h: int = 200, w: int = 280, slope: float = 0.0) -> Image.Image:
    """Plain paper with thin rulings every SPACING px, falling by ``slope`` px per px."""
    img = Image.new("L", (w, h), PAPER)
    draw = ImageDraw.Draw(img)
    for y in range(-SPACING * 4, h + SPACING * 4, SPACING):
        draw.line([(0, y + 5), (w, y + 5 + slope * w)], fill=RULING, width=2)
    return img


def test_a_stroke_along_a_ruling_keeps_it_a_ruling_and_the_stroke_stays() -> None:
    """A "5"-like mark: its top bar drawn along one ruling, its stem crossing the next. The
    band of that ruling is thick where the bar lies; it is still removed across the page,
    and the bar itself (darker than the ruling) stays."""
    img = _ruled()
    draw = ImageDraw.Draw(img)
    bar_y = 3 * SPACING + 5
    draw.line([(120, bar_y), (165, bar_y)], fill=INK, width=4)  # the bar, on the ruling
    draw.line([(122, bar_y), (118, bar_y + 2 * SPACING)], fill=INK, width=4)  # the stem
    draw.arc([(110, bar_y + 25), (165, bar_y + 75)], 270, 150, fill=INK, width=4)
    ink = decode_image(_png(np.asarray(img, np.float32)))
    # Away from the mark every ruling is gone, the one under the bar included.
    assert ink[:, :90].max() < 0.1
    assert ink[:, 200:].max() < 0.1
    assert ink[bar_y - 1 : bar_y + 2, 125:160].mean() > 0.5


def test_a_margin_line_through_the_digit_is_removed() -> None:
    """One vertical (red) margin line, a "4" written on it: its stem runs along the line,
    close enough to join its band, and there is no other vertical line to take the
    direction from."""
    img = Image.new("RGB", (280, 200), (PAPER,) * 3)
    draw = ImageDraw.Draw(img)
    draw.line([(140, 0), (140, 200)], fill=(225, 100, 120), width=2)
    draw.line([(146, 70), (146, 135)], fill=(INK,) * 3, width=4)  # the stem, beside the line
    draw.line([(122, 70), (114, 112), (165, 112)], fill=(INK,) * 3, width=4)
    ink = decode_image(_png(np.asarray(img.convert("L"), np.float32)))
    assert ink[:55, 135:143].max() < 0.1 and ink[150:, 135:143].max() < 0.1
    assert ink[75:130, 145:148].mean() > 0.5  # the stem stays


def test_a_ruling_cut_short_by_the_frame_does_not_widen_the_crop() -> None:
    """The page turned: rulings run out of the top of the frame, the last one after a short
    stretch. The digit alone decides the crop, as on a page without rulings."""
    img = _ruled(slope=-0.08)
    draw = ImageDraw.Draw(img)
    draw.line([(150, 80), (150, 140)], fill=INK, width=5)
    ruled = pre_process([_png(np.asarray(img, np.float32))])[0, :, :, 0]
    plain = Image.new("L", img.size, PAPER)
    ImageDraw.Draw(plain).line([(150, 80), (150, 140)], fill=INK, width=5)
    clean = pre_process([_png(np.asarray(plain, np.float32))])[0, :, :, 0]
    assert np.abs(ruled - clean).mean() < 0.02


def _message(grey: np.ndarray) -> str:
    with pytest.raises(NoDigit) as caught:
        pre_process([_png(grey)])
    return str(caught.value)


@pytest.mark.parametrize(
    "grey",
    [
        np.full((120, 160), 255.0),
        np.full((120, 160), 30.0),
        np.tile(np.linspace(90, 230, 160), (120, 1)),  # a gradient of light
        PAPER + np.random.default_rng(0).normal(0, 1.5, (120, 160)),  # paper, sensor noise
    ],
    ids=["white", "black", "gradient", "paper"],
)
def test_blank_pictures_are_called_blank(grey: np.ndarray) -> None:
    assert "blank or uniform" in _message(grey)


def _weave(h: int = 120, w: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return 150 + 30 * np.sin(xx * 1.3) * np.sin(yy * 1.3)


@pytest.mark.parametrize(
    "grey",
    [_weave(), 128 + np.random.default_rng(1).normal(0, 25, (120, 160))],
    ids=["weave", "noise"],
)
def test_textures_are_not_called_blank(grey: np.ndarray) -> None:
    message = _message(grey)
    assert "blank" not in message
    assert "texture or pattern" in message


def _small_three_on_a_margin(rulings: bool) -> bytes:
    """A small, faint (pencil) "3" written across a red margin line on ruled paper, or the
    same mark on plain paper."""
    img = Image.new("RGB", (280, 200), (PAPER,) * 3)
    draw = ImageDraw.Draw(img)
    if rulings:
        for y in range(5, 200, SPACING):
            draw.line([(0, y), (280, y)], fill=(150, 180, 230), width=2)
        draw.line([(140, 0), (140, 200)], fill=(225, 100, 120), width=2)
    pencil = (110,) * 3
    draw.arc([(135, 86), (147, 96)], 200, 90, fill=pencil, width=2)
    draw.arc([(135, 96), (147, 106)], 270, 160, fill=pencil, width=2)
    return _png(np.asarray(img.convert("L"), np.float32))


def test_a_small_digit_on_a_margin_line_is_not_taken_for_the_line() -> None:
    """The margin line's band (its tilt allowance) is as wide as a small digit written on
    it: only the line's own thickness around its fitted centre is the line, so the digit
    comes out as on plain paper (it was erased to a fragment)."""
    ruled = pre_process([_small_three_on_a_margin(True)])[0, :, :, 0]
    plain = pre_process([_small_three_on_a_margin(False)])[0, :, :, 0]
    assert np.abs(ruled - plain).mean() < 0.03


def _dashed_grid(digit: bool) -> bytes:
    """Squared paper whose faint lines come out broken into dashes (gaps of 2-4 px), with
    or without a "4" on it."""
    rng = np.random.default_rng(0)
    img = Image.new("L", (280, 200), PAPER)
    draw = ImageDraw.Draw(img)
    for horizontal, length in ((True, 280), (False, 200)):
        for at in range(7 if horizontal else 5, 200 if horizontal else 280, 14):
            pos = 0
            while pos < length:
                dash = int(rng.integers(3, 9))
                ends = (
                    [(pos, at), (pos + dash, at)] if horizontal else [(at, pos), (at, pos + dash)]
                )
                draw.line(ends, fill=200, width=1)
                pos += dash + int(rng.integers(2, 5))
    if digit:
        draw.line([(150, 70), (150, 140)], fill=INK, width=4)
        draw.line([(130, 70), (122, 112), (170, 112)], fill=INK, width=4)
    return _png(np.asarray(img, np.float32))


def test_a_faint_dashed_grid_is_removed_across_the_page() -> None:
    """A dashed line's level is its dashes' (not the average over its gaps), so the dashes
    are refilled like a solid line's pixels; away from the digit nothing is left."""
    ink = decode_image(_dashed_grid(True))
    assert ink[:, :100].max() < 0.05 and ink[:, 200:].max() < 0.05
    assert ink[75:135, 148:153].mean() > 0.5  # the stem stays


def _bold_one(top: tuple[int, int], bottom: tuple[int, int], width: int) -> bytes:
    """A "1" drawn as MNIST draws digits (white on black, 28×28), made bold as
    ``training.variants.thick`` makes it: 112×112, a square pen (MaxFilter 7)."""
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).line([top, bottom], fill=255, width=width)
    return thick(np.asarray(img))


@pytest.mark.parametrize(
    ("top", "bottom", "width"),
    [((15, 5), (12, 23), 4), ((14, 5), (14, 22), 4), ((14, 4), (14, 24), 5)],
    ids=["slanted", "upright", "bolder"],
)
def test_a_bold_square_pen_one_is_not_a_sheet(
    top: tuple[int, int], bottom: tuple[int, int], width: int
) -> None:
    """The bar of a bold 1 is bright, straight-sided and a sharp step from its dark ground:
    what a sheet on a desk looks like, and the crop to its inside left nothing ("blank").
    Clear of the frame a sheet is a quadrangle of paper's proportions; the bar is over 3
    times as long as wide, so the picture is left whole and the 1 read."""
    data = _bold_one(top, bottom, width)
    grey = np.asarray(Image.open(io.BytesIO(data)), np.float32) / 255
    assert find_page(grey).shape == grey.shape
    ink = pre_process([data])[0, :, :, 0]
    assert ink.max() > 0.9 and (ink > 0.5).sum() > 40  # a stroke, not a remnant


def test_a_bold_zero_with_a_small_hole_is_not_a_sheet() -> None:
    """A bold 0 whose hole fills in is a blob with many short sides (no four corners): it
    was cropped to its inside, and the hole alone was left as the digit."""
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).ellipse([(8, 6), (20, 22)], outline=255, width=4)
    data = thick(np.asarray(img))
    grey = np.asarray(Image.open(io.BytesIO(data)), np.float32) / 255
    assert find_page(grey).shape == grey.shape


# --- a picture cropped to the digit


def _page_drawing(strokes: list[tuple[tuple[int, int], tuple[int, int]]]) -> bytes:
    """The web page's pad (serving/static/app.js): 280×280 white, ink #111, a pen 280/13
    wide with round ends, exported as an RGB PNG."""
    img = Image.new("RGB", (280, 280), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for start, end in strokes:
        draw.line([start, end], fill=(17, 17, 17), width=22)
        for x, y in (start, end):
            draw.ellipse([(x - 11, y - 11), (x + 11, y + 11)], fill=(17, 17, 17))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "strokes",
    [
        [((140, -20), (146, 300))],  # a 1 drawn past the top and the bottom
        [((128, -20), (160, 300))],  # ... slanted
        [((40, 0), (240, 0)), ((240, 0), (120, 300))],  # a 7 from edge to edge
    ],
    ids=["one", "slanted-one", "seven"],
)
def test_a_digit_drawn_from_edge_to_edge_of_the_page_is_read(
    strokes: list[tuple[tuple[int, int], tuple[int, int]]],
) -> None:
    """A stroke from the top of the pad to its bottom cuts the paper in two: one half was
    taken for a sheet on a dark desk (the stroke), and the crop to it was refused as blank.
    With a margin of paper around it the drawing is a digit on paper."""
    ink = pre_process([_page_drawing(strokes)])[0, :, :, 0]
    assert ink.max() > 0.9
    rows = np.flatnonzero((ink > 0.5).any(axis=1))
    assert rows[-1] - rows[0] >= 18  # the stroke fills the height, as MNIST's 20×20 box


def _tight(digit: np.ndarray, scale: int = 8, level: int = 128) -> np.ndarray:
    """``digit`` enlarged and cropped where its strokes reach ``level``: dark ink on white."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale,) * 2, Image.Resampling.BICUBIC))
    ys, xs = np.nonzero(big >= level)
    crop = big[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    return 245 - crop * (245 - 35) / 255


def test_a_digit_cropped_to_its_ink_reads_as_with_a_margin(mnist) -> None:
    """Tight crops of validation digits (strokes cut by the frame on every side) come out as
    the same crops with a margin of paper do; without the margin 7 of these 60 were refused
    as blank and 3 more came out more than 0.1 (mean absolute difference) from the framed
    crop's 28×28."""
    refused, far = 0, 0
    for digit in mnist.x_train[-60:]:
        tight = _tight(digit)
        framed = np.pad(tight, 24, constant_values=245)
        want = pre_process([_png(framed)])[0, :, :, 0]
        try:
            got = pre_process([_png(tight)])[0, :, :, 0]
        except NoDigit:
            refused += 1
            continue
        far += float(np.abs(got - want).mean()) > 0.1
    assert refused == 0
    assert far <= 1


@pytest.mark.parametrize("name", ["paper_jpeg", "desk_photo", "ruled_paper", "shadow"])
def test_a_picture_with_paper_at_its_frame_gets_no_margin(mnist, name: str) -> None:
    for i, digit in enumerate(mnist.x_train[-20:]):
        grey = _grey(VARIANTS[name](digit, i))
        assert pad_cut_ink(grey) is grey


def test_the_margin_is_paper_of_the_same_grain() -> None:
    """Mirrored at the edges, held within three noise deviations of the paper: the ink that
    touches the frame is not mirrored into the margin."""
    rng = np.random.default_rng(0)
    grey = np.float32(0.9) + rng.normal(0, 0.01, (120, 90)).astype(np.float32)
    grey[:, 40:52] = 0.1  # a stroke from the top to the bottom
    out = pad_cut_ink(grey)
    pad = (out.shape[0] - 120) // 2
    assert pad >= 2 and out.shape == (120 + 2 * pad, 90 + 2 * pad)
    assert np.array_equal(out[pad:-pad, pad:-pad], grey)
    margin = np.concatenate([out[:pad].ravel(), out[-pad:].ravel()])
    assert abs(float(margin.mean()) - 0.9) < 0.01 and float(margin.min()) > 0.8
    assert float(margin.std()) > 0.003  # the paper's grain, not a flat band
