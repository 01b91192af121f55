"""pyfunc.segment on constructed images: digits apart or touching, broken strokes, specks,
the frame's edge, boxes in the pixels of the image as sent."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pyfunc import preprocess, segment
from pyfunc.errors import MultipleDigits, NoDigit
from pyfunc.model import ONNX_ARTIFACT, DigitModel
from training import numbers


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _page(width: int = 400, height: int = 160) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (width, height), 255)
    return img, ImageDraw.Draw(img)


def _one(draw: ImageDraw.ImageDraw, x: int, y: int = 30, h: int = 100) -> None:
    # Slanted, with a flag: a long straight line is a ruling to the pre-processing.
    top = (x + h // 8, y)
    draw.line([(top[0] - h // 5, y + h // 5), top, (x, y + h)], fill=0, width=8)


def _zero(draw: ImageDraw.ImageDraw, x: int, y: int = 30, h: int = 100) -> None:
    draw.ellipse([x, y, x + int(0.7 * h), y + h], outline=0, width=8)


def test_digits_apart_are_found_left_to_right_with_their_boxes():
    img, draw = _page()
    _zero(draw, 40)
    _one(draw, 200)
    _zero(draw, 260)
    found = segment.find_digits(_png(img))
    assert len(found) == 3
    xs = [b[0] for b in found.boxes]
    assert xs == sorted(xs)
    # Boxes are the ink's, within the strokes' width.
    x, y, w, h = found.boxes[0]
    assert abs(x - 36) <= 4 and abs(y - 26) <= 4 and abs(w - 78) <= 8 and abs(h - 108) <= 8
    assert not any(d.touching for d in found.digits)


def test_boxes_are_in_the_pixels_of_a_large_image_as_sent():
    # 2000 px wide: decoded at a reduced size, boxes scaled back.
    img, draw = _page(2000, 800)
    _zero(draw, 200, 150, 500)
    _zero(draw, 1400, 150, 500)
    found = segment.find_digits(_png(img))
    assert len(found) == 2
    x, y, w, h = found.boxes[1]
    assert abs(x - 1396) <= 20 and abs(y - 146) <= 20
    assert abs(w - 358) <= 30 and abs(h - 508) <= 30


def test_a_five_with_a_separate_top_bar_is_one_digit():
    img, draw = _page(200, 160)
    draw.line([(70, 30), (130, 30)], fill=0, width=7)  # the bar, not touching the body
    draw.line([(70, 44), (68, 80)], fill=0, width=7)
    draw.arc([60, 70, 130, 135], start=-90, end=150, fill=0, width=7)
    assert len(segment.find_digits(_png(img))) == 1
    segment.require_single(_png(img))  # not refused


def test_a_dotted_seven_is_one_digit():
    img, draw = _page(200, 160)
    points = [(60 + 10 * i, 30) for i in range(8)] + [(130 - 6 * i, 40 + 10 * i) for i in range(10)]
    for px, py in points:
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=0)
    assert len(segment.find_digits(_png(img))) == 1


def test_specks_and_a_dot_between_digits_are_not_digits():
    img, draw = _page()
    _one(draw, 100)
    draw.ellipse([140, 122, 150, 132], fill=0)  # a decimal point
    _one(draw, 200)
    draw.point((350, 20), fill=0)
    assert len(segment.find_digits(_png(img))) == 2


def test_ink_cut_by_the_frame_edge_is_not_a_digit():
    img, draw = _page()
    _zero(draw, 150)
    draw.polygon([(0, 160), (0, 100), (40, 160)], fill=80)  # a desk corner
    assert len(segment.find_digits(_png(img))) == 1


def test_touching_digits_are_cut_where_the_ink_is_thinnest():
    img, draw = _page()
    _zero(draw, 100)
    _zero(draw, 166)  # overlaps the first ring by a few pixels
    png = _png(img)
    found = segment.find_digits(png)
    assert len(found) == 2 and all(d.touching for d in found.digits)
    cut = found.boxes[0][0] + found.boxes[0][2]
    assert 150 <= cut <= 185  # the rings meet at 166-174
    # Counted as one where touching digits are not cut apart (/recognize).
    assert len(segment.find_digits(png, split_touching=False)) == 1
    segment.require_single(png)


def test_one_wide_digit_is_not_cut():
    img, draw = _page(300, 160)
    draw.line([(40, 40), (200, 40), (110, 130)], fill=0, width=8)  # a wide 7, 1.8× as wide
    assert len(segment.find_digits(_png(img), split_touching=False)) == 1


def test_several_digits_are_refused_where_one_is_expected():
    img, draw = _page()
    _one(draw, 100)
    _zero(draw, 200)
    with pytest.raises(MultipleDigits) as caught:
        segment.require_single(_png(img))
    assert caught.value.code == "multiple_digits" and caught.value.status == 422
    assert len(caught.value.boxes) == 2
    assert caught.value.boxes[0][0] < caught.value.boxes[1][0]


def test_crops_are_white_ink_on_black_with_a_margin():
    img, draw = _page()
    _one(draw, 100)
    _zero(draw, 200)
    crop = segment.find_digits(_png(img)).digits[1].crop
    assert crop.dtype == np.float32 and crop.max() > 0.9
    border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    assert border.max() == 0
    # The other digit's ink is not in this one's crop: the ring is hollow in the middle.
    h, w = crop.shape
    assert crop[h // 2, w // 2] == 0


def test_mnist_digits_are_one_digit(mnist):
    # The first 300 test digits (the rate on all of them and the variants: docs/numbers.md).
    counts = [len(segment.find_digits(x, split_touching=False)) for x in mnist.x_test[:300]]
    assert sum(c != 1 for c in counts) <= 1


def test_the_count_is_the_number_of_digits_found_without_cutting(mnist):
    # count_digits (what /recognize's check runs on every image) must agree with the full
    # segmentation: lone digits, numbers of every spacing, photographed numbers, specks.
    rng = np.random.default_rng(5)
    digits = mnist.x_train[50_000:]  # the validation range
    images = [preprocess.to_ink(x) for x in digits[:200]]
    for spacing in numbers.SPACINGS:
        for length in (2, 3, 5):
            for _ in range(6):
                idx = rng.integers(0, len(digits), length)
                strip = numbers.compose([digits[i] for i in idx], spacing, rng)
                images.append(preprocess.to_ink(strip))
                images.append(preprocess.decode_image(numbers.photo(strip, rng)))
    for png in (_png(_specks()), _png(_corner())):
        images.append(preprocess.decode_image(png))
    counts = [segment.count_digits(ink) for ink in images]
    assert counts == [len(segment.segment_ink(ink, split_touching=False)) for ink in images]
    assert {1, 2, 3, 5} <= set(counts)  # lone digits and numbers of several lengths
    assert segment.count_digits(np.zeros((28, 28), np.float32)) == 0


def _specks() -> Image.Image:
    img, draw = _page()
    _one(draw, 100)
    draw.ellipse([140, 122, 150, 132], fill=0)
    _one(draw, 200)
    draw.point((350, 20), fill=0)
    return img


def _corner() -> Image.Image:
    img, draw = _page()
    _zero(draw, 150)
    draw.polygon([(0, 160), (0, 100), (40, 160)], fill=80)
    return img


def test_a_blank_image_has_no_digit():
    img, _ = _page()
    with pytest.raises(NoDigit):
        segment.find_digits(_png(img))
    segment.require_single(_png(img))  # left to the pre-processing to refuse


def test_a_slanted_one_broken_into_pieces_one_above_the_other_is_one_digit():
    # What is left of a 1 whose middle was taken out with a ruling it lay along: two pieces
    # that share no row and no column. Digits of one line share rows; these are one digit.
    img, draw = _page(200, 160)
    draw.line([(126, 25), (113, 66)], fill=0, width=8)
    draw.line([(99, 94), (87, 132)], fill=0, width=8)
    assert len(segment.find_digits(_png(img))) == 1
    segment.require_single(_png(img))  # not refused as multiple_digits


def test_digits_on_a_steep_line_are_still_apart():
    # A number written uphill: neighbours share rows, so they are not joined as pieces.
    img, draw = _page(400, 240)
    _zero(draw, 40, 120)
    _zero(draw, 150, 70)
    _zero(draw, 260, 20)
    assert len(segment.find_digits(_png(img))) == 3


def test_a_zero_cut_out_of_a_number_reaches_the_model_hollow(mnist):
    # MNIST test #145 (a 1) and #246 (a 0) written apart: the 0's ink, cut out white on
    # black, passed the model's photo handling for a sheet on a desk and came back filled.
    strip = numbers.compose(
        [mnist.x_test[145], mnist.x_test[246]], "wide", np.random.default_rng(18)
    )
    zero = segment.find_digits(numbers.plain(strip)).digits[1]
    model_input = preprocess.pre_process([zero.crop])[0, :, :, 0]
    assert zero.crop.shape == (28, 28)
    assert model_input[11:17, 11:17].mean() < 0.2  # hollow in the middle
    # Framed as MNIST frames a digit: the crop is what the model works on.
    np.testing.assert_allclose(model_input, zero.crop, atol=1e-6)


@pytest.fixture(scope="module")
def tiny(tiny_onnx) -> DigitModel:
    """The tests' tiny real model (tests/tiny_model.py), loaded as MLflow loads a version."""

    class Context:
        def __init__(self) -> None:
            self.artifacts = {ONNX_ARTIFACT: str(tiny_onnx)}
            self.model_config: dict = {}

    model = DigitModel()
    model.load_context(Context())  # type: ignore[arg-type]
    return model


def _touching(mnist, indices: list[int]) -> bytes:
    rng = np.random.default_rng(3)
    return numbers.plain(numbers.compose([mnist.x_test[i] for i in indices], "touching", rng))


def test_touching_digits_are_recut_where_the_model_reads_them(mnist, tiny):
    # MNIST test #3, #2, #1 (0, 1, 2) touching: one group of ink, cut by the ink, then
    # again where the model's readings score best.
    image = _touching(mnist, [3, 2, 1])
    found = segment.find_digits(image)
    assert len(found.touching) == 1
    ink_cut = [d for d in found.digits if d.group == 0]
    recut = segment.recut_touching(tiny, found)
    parts = [d for d in recut.digits if d.group == 0]
    assert abs(len(parts) - len(ink_cut)) <= 1 and len(parts) >= 2
    assert all(d.touching and d.crop.shape == (28, 28) for d in parts)
    # Side by side, left to right, none wider than one digit of the line.
    xs = [d.box[0] for d in parts]
    assert xs == sorted(xs)
    for left, right in itertools.pairwise(parts):
        assert left.box[0] + left.box[2] <= right.box[0] + 1
    assert max(d.box[2] for d in parts) <= segment.SPLIT_WIDTH * max(d.box[3] for d in parts)
    read = segment.read_number(tiny, image)
    assert [d.box for d, _ in read] == [d.box for d in recut.digits]
    unread = segment.read_number(tiny, image, recut=False)
    assert [d.box for d, _ in unread] == [d.box for d in found.digits]


def test_a_number_without_touching_digits_is_not_recut(mnist, tiny):
    image = numbers.plain(numbers.compose(list(mnist.x_test[:3]), "wide", np.random.default_rng(0)))
    found = segment.find_digits(image)
    assert not found.touching and not any(d.touching for d in found.digits)
    assert segment.recut_touching(tiny, found) is found
