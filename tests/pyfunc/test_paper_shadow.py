"""pyfunc.paper on shadows: a shadow's edge is not a sheet's, a bold stroke in a shadowed
picture stays whole, and a shadow's remnant at the frame does not shrink the digit. The
pictures are drawn here, so each test knows where the shadow and the strokes are."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from pyfunc.paper import drop_frame_marks, find_page
from pyfunc.preprocess import decode_image, pre_process

PAPER, INK = 225.0, 40.0
H, W = 180, 240


def _png(grey: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _shadowed(img: Image.Image, shade: np.ndarray, light: float = 0.55) -> np.ndarray:
    """``img`` (grey, paper and ink) with the light falling to ``light`` where ``shade``."""
    grey = np.asarray(img, np.float32)
    noise = np.random.default_rng(0).normal(0, 1.0, grey.shape)
    return np.where(shade, grey * light, grey) + noise


def test_a_shadow_edge_bent_where_a_digit_sits_on_it_is_not_a_sheet() -> None:
    """The lit part of the page is bounded by a shadow edge that turns by 15° halfway
    (light falling off, the digit on it): one edge, not a sheet's corner, so nothing is
    cropped away (a crop to the lit part erased the digit in the shade)."""
    yy, xx = np.mgrid[0:H, 0:W]
    # The edge runs from the left frame at y=120 to x=120 at y=80, then turns by 15°.
    first = yy < 120 - xx * (40 / 120)
    second_slope = np.tan(np.arctan(40 / 120) + np.radians(15))
    second = yy < 80 - (xx - 120) * second_slope
    lit = np.where(xx < 120, first, second)
    img = Image.new("L", (W, H), int(PAPER))
    ImageDraw.Draw(img).line([(110, 60), (130, 120)], fill=int(INK), width=5)
    grey = _shadowed(img, ~lit) / 255.0
    page = find_page(grey.astype(np.float32))
    assert page.shape == grey.shape


def test_a_bold_stroke_in_a_shadowed_picture_is_not_hollowed() -> None:
    """A felt-tip "0" with strokes wider than the shadow opening's window, half in shade:
    the opening keeps the blob as if it were shade unless capped at the shade's level seen
    at the frame; the stroke's middle must stay ink."""
    img = Image.new("L", (W, H), int(PAPER))
    ImageDraw.Draw(img).ellipse([(70, 25), (170, 155)], outline=int(INK), width=34)
    xx = np.mgrid[0:H, 0:W][1]
    ink = decode_image(_png(_shadowed(img, xx > 120)))
    # The ring's stroke, middle of its left and right sides (one lit, one in shade).
    assert ink[80:100, 80:95].mean() > 0.5
    assert ink[80:100, 145:160].mean() > 0.5


def test_a_speck_at_the_frame_of_a_shadowed_picture_does_not_shrink_the_digit() -> None:
    """A shadow's wedge tip left at the frame is a small mark there: it is dropped, so the
    digit is framed as without it."""
    xx = np.mgrid[0:H, 0:W][1]
    shade = xx > 150

    def drawn(speck: bool) -> np.ndarray:
        img = Image.new("L", (W, H), int(PAPER))
        draw = ImageDraw.Draw(img)
        draw.line([(100, 50), (100, 130)], fill=int(INK), width=7)
        draw.line([(100, 50), (80, 70)], fill=int(INK), width=7)
        if speck:
            draw.rectangle([(0, 168), (11, 179)], fill=int(INK))
        return pre_process([_png(_shadowed(img, shade))])[0, :, :, 0]

    assert np.abs(drawn(True) - drawn(False)).mean() < 0.01


def test_drop_frame_marks_keeps_the_digit_and_marks_inside() -> None:
    """Only small marks at the frame go: one as small inside the picture is the crop's to
    judge (it may be a digit's dot), and a large one at the frame is a digit touching it."""
    ink = np.zeros((60, 80), np.float32)
    ink[10:50, 30:36] = 1.0  # the digit
    ink[0:3, 70:74] = 0.8  # a small mark at the frame
    ink[40:43, 60:63] = 0.8  # a small mark inside
    out = drop_frame_marks(ink, 0.2)
    assert out[0:3, 70:74].max() == 0
    assert (out[10:50, 30:36] == 1.0).all() and (out[40:43, 60:63] == 0.8).all()
    # A large mark at the frame (a digit touching it) stays.
    ink[20:60, 0:6] = 1.0
    assert (drop_frame_marks(ink, 0.2)[20:60, 0:6] == 1.0).all()
