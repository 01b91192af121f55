"""pyfunc.budget: decoder bombs are refused (or cut down) before any pixel is decoded, and
ordinary images, progressive JPEGs and animations included, still decode.

No test here times anything: each asserts what Pillow was asked to do (which images it
opened, at what size, and whether it loaded pixels). What the bombs cost is measured by
``python -m bench.bombs`` (figures in docs/security.md).
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin, WebPImagePlugin

from bench import bombs
from pyfunc import budget
from pyfunc.errors import ImageError, ImageTooLarge, NoDigit
from pyfunc.preprocess import DEFAULT_LIMITS, Limits, decode_image, pre_process
from training import variants


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    """Two different MNIST test digits (a 7 and a 2)."""
    return mnist.x_test[0], mnist.x_test[1]


@contextlib.contextmanager
def watch_pillow() -> Iterator[tuple[list, list]]:
    """Records each image Pillow opens, as (format, size), and each load of pixels, as
    (size, frame)."""
    opened: list[tuple[str, tuple[int, int]]] = []
    loaded: list[tuple[tuple[int, int], int]] = []
    real_open, real_load = Image.open, ImageFile.ImageFile.load

    def spy_open(*args, **kwargs):
        img = real_open(*args, **kwargs)
        opened.append((img.format, img.size))
        return img

    def spy_load(self):
        loaded.append((self.size, self.tell()))
        return real_load(self)

    with (
        mock.patch.object(Image, "open", spy_open),
        mock.patch.object(ImageFile.ImageFile, "load", spy_load),
    ):
        yield opened, loaded


def refused_unopened(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ImageTooLarge:
    """``data`` is refused as too large before Pillow even opens it."""
    with watch_pillow() as (opened, loaded), pytest.raises(ImageTooLarge) as info:
        decode_image(data, limits)
    assert opened == [] and loaded == []
    assert info.value.status == 413 and info.value.code == "image_too_large"
    return info.value


def refused_unloaded(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ImageTooLarge:
    """``data`` is opened (its header read) but refused before a pixel is decoded."""
    with watch_pillow() as (opened, loaded), pytest.raises(ImageTooLarge) as info:
        decode_image(data, limits)
    assert len(opened) == 1 and loaded == []
    return info.value


def decodes(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[tuple[str, tuple[int, int]]]:
    """``data`` passes the budget and is decoded (a blank picture may have no digit);
    returns what Pillow opened."""
    with watch_pillow() as (opened, loaded), contextlib.suppress(NoDigit):
        decode_image(data, limits)
    assert loaded, "no pixel was decoded"
    return opened


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def scans(jpeg: bytes) -> int:
    return sum(marker == 0xDA for marker, _ in bombs.jpeg_segments(jpeg))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def recognised_as(data: bytes, reference: np.ndarray) -> float:
    return correlation(pre_process([data])[0, :, :, 0], pre_process([reference])[0, :, :, 0])


# --------------------------------------------------------------------------- JPEG


def test_repeated_scan_bomb_is_refused_before_pillow_opens_it() -> None:
    bomb = bombs.jpeg_scan_bomb(1000, (2000, 800))
    error = refused_unopened(bomb)
    assert f"more than {DEFAULT_LIMITS.max_jpeg_scans} scans" in str(error)


def _photo(digit: np.ndarray, mode: str, **params: object) -> bytes:
    """A real digit on paper, re-encoded as a progressive JPEG in ``mode``."""
    paper = Image.open(io.BytesIO(variants.paper_jpeg(digit))).resize((600, 600))
    return encode(paper.convert(mode), "JPEG", progressive=True, quality=95, **params)


@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("L", {}),
        ("RGB", {}),  # 4:2:0
        ("RGB", {"subsampling": 0}),  # 4:4:4
        ("RGB", {"restart_marker_rows": 1}),  # restart markers inside every scan
        ("CMYK", {}),
    ],
    ids=["grey", "colour-420", "colour-444", "restart-markers", "cmyk"],
)
def test_scans_are_counted_exactly(digits, mode: str, params: dict) -> None:
    photo = _photo(digits[0], mode, **params)
    n = scans(photo)
    assert 6 <= n <= 18  # what libjpeg writes: 6 (grey), 10 (YCbCr), 18 (CMYK)
    assert decodes(photo, Limits(max_jpeg_scans=n))
    refused_unopened(photo, Limits(max_jpeg_scans=n - 1))


def test_progressive_photos_are_recognised_as_before(digits) -> None:
    for mode in ("L", "RGB"):
        photo = _photo(digits[0], mode)
        baseline = Image.open(io.BytesIO(photo))
        same = encode(baseline.convert(mode), "JPEG", quality=95)
        assert recognised_as(photo, same) > 0.95


def test_data_after_the_end_of_the_image_is_not_counted(digits) -> None:
    photo = _photo(digits[0], "L")
    sos = next(data for marker, data in bombs.jpeg_segments(photo) if marker == 0xDA)
    trailer = sos * 100  # what a phone appends after EOI is not the picture
    assert decodes(photo + trailer, Limits(max_jpeg_scans=scans(photo)))


def test_fill_byte_bomb_is_refused_before_pillow_opens_it() -> None:
    error = refused_unopened(bombs.jpeg_fill_bomb(100_000))
    assert "fill bytes" in str(error)


def test_segment_bomb_is_refused_before_pillow_opens_it() -> None:
    error = refused_unopened(bombs.jpeg_segment_bomb(5_000))
    assert "marker segments" in str(error)


def test_some_fill_bytes_and_comments_are_fine(digits) -> None:
    photo = _photo(digits[0], "L")
    padded = photo[:2] + b"\xff" * 100 + b"\xff\xfe\x00\x05abc" * 100 + photo[2:]
    assert decodes(padded)
    assert recognised_as(padded, photo) > 0.99


def _with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header declaring another size (the data stays as it is)."""
    out = bytearray(jpeg)
    pos = 2
    for marker, data in bombs.jpeg_segments(jpeg):
        if 0xC0 <= marker <= 0xC2:
            out[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        pos += len(data)
    raise AssertionError("no frame header")


def test_multi_scan_jpeg_is_bounded_by_its_coefficient_memory() -> None:
    # libjpeg holds every coefficient of a progressive JPEG: 40 Mpx × 4 components × 2 bytes.
    cmyk = _with_size(encode(Image.new("CMYK", (64, 64)), "JPEG", progressive=True), 10_000, 4_000)
    error = refused_unopened(cmyk)
    assert "MiB of coefficients" in str(error)
    # Colour at 4:2:0 needs 1.5 components' worth: 120 MB, within the budget.
    colour = _with_size(encode(Image.new("RGB", (64, 64)), "JPEG", progressive=True), 10_000, 4_000)
    budget.check_encoded(colour, "JPEG", DEFAULT_LIMITS)
    # Baseline (one scan) is decoded drafted, without that buffer: the same size is fine.
    baseline = _with_size(encode(Image.new("CMYK", (64, 64)), "JPEG"), 10_000, 4_000)
    budget.check_encoded(baseline, "JPEG", DEFAULT_LIMITS)


def test_broken_marker_structure_is_left_to_the_decoder(digits) -> None:
    photo = _photo(digits[0], "L")
    for broken in (photo[:2] + b"\x00" + photo[2:], photo[:200], photo[:2] + b"\xff"):
        budget.check_encoded(broken, "JPEG", DEFAULT_LIMITS)
        with pytest.raises(ImageError) as info:
            decode_image(broken)
        assert not isinstance(info.value, ImageTooLarge)


# --------------------------------------------------------------------------- WebP


def test_animated_canvas_bomb_is_refused_before_opening() -> None:
    bomb = bombs.webp_canvas_bomb()  # 1×1 frames on a 10000×4000 canvas
    error = refused_unopened(bomb)
    assert "animated WebP canvas" in str(error) and "12,000,000 pixels" in str(error)


def _animation(digits, params: dict) -> bytes:
    params = dict(params)
    mode = "RGBA" if params.pop("alpha", False) else "RGB"
    first, second = (
        Image.fromarray(255 - np.kron(d, np.ones((4, 4), np.uint8))).convert(mode) for d in digits
    )
    if mode == "RGBA":  # ink in the alpha on a transparent canvas: the frame has an ALPH chunk
        first = Image.new("RGBA", first.size, (0, 0, 0, 0))
        first.putalpha(Image.fromarray(np.kron(digits[0], np.ones((4, 4), np.uint8))))
    return encode(first, "WEBP", save_all=True, append_images=[second], **params)


@pytest.mark.parametrize(
    "params",
    [{"lossless": True}, {"quality": 90}, {"quality": 90, "alpha": True}],
    ids=["lossless", "lossy", "lossy-alpha"],
)
def test_animated_webp_decodes_its_first_frame_only(digits, params: dict) -> None:
    animation = _animation(digits, params)
    assert Image.open(io.BytesIO(animation)).n_frames == 2
    frames = []
    real_next = WebPImagePlugin.WebPImageFile._get_next

    def spy_next(self):
        frames.append(self.size)
        return real_next(self)

    with mock.patch.object(WebPImagePlugin.WebPImageFile, "_get_next", spy_next):
        ink = decode_image(animation)
    assert frames == [(112, 112)]  # one frame decoded, never the second
    with Image.open(io.BytesIO(animation)) as img:
        frame_one = encode(img.convert("RGBA"), "PNG")
    assert np.array_equal(ink, decode_image(frame_one))


def test_animated_canvas_is_held_to_the_webp_limit(digits) -> None:
    animation = _animation(digits, {"lossless": True})
    assert decodes(animation, Limits(max_webp_pixels=112 * 112))
    refused_unopened(animation, Limits(max_webp_pixels=112 * 112 - 1))


@pytest.mark.parametrize(
    ("mode", "params"),
    [("RGB", {"lossless": True}), ("RGB", {"quality": 80}), ("RGBA", {"quality": 80})],
    ids=["VP8L", "VP8", "VP8X"],
)
def test_still_webp_is_held_to_the_webp_limit_before_opening(mode, params) -> None:
    still = encode(Image.new(mode, (300, 200), (255, 255, 255, 128)), "WEBP", **params)
    assert (
        still[12:16]
        == {"VP8L": b"VP8L", "VP8": b"VP8 ", "VP8X": b"VP8X"}[
            "VP8X" if mode == "RGBA" else ("VP8L" if params.get("lossless") else "VP8")
        ]
    )
    assert decodes(still, Limits(max_webp_pixels=60_000))
    refused_unopened(still, Limits(max_webp_pixels=59_999))


def test_large_lossless_webp_is_refused_before_opening() -> None:
    error = refused_unopened(bombs.webp_lossless_canvas((4_000, 3_001)))
    assert "12,000,000 pixels" in str(error)


# --------------------------------------------------------------------------- PNG, GIF, BMP


def test_lossless_canvases_are_refused_before_loading() -> None:
    for bomb in (bombs.png_canvas((5_000, 4_000)), bombs.gif_canvas()):
        error = refused_unloaded(bomb)
        assert "16,000,000 pixels" in str(error) and "full size" in str(error)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP"])
def test_lossless_limit_is_exact(fmt: str) -> None:
    image = encode(Image.new("L", (200, 100), 255), fmt)
    assert decodes(image, Limits(max_lossless_pixels=20_000))
    refused_unloaded(image, Limits(max_lossless_pixels=19_999))


def test_jpeg_is_not_held_to_the_lossless_limit(digits) -> None:
    # A JPEG is decoded drafted (1/8 of each side): a large photo is cheap. A flat page with
    # the digit on it: variants.big_photo_jpeg's light and noise took seconds to draw.
    page = Image.new("L", (6_000, 4_000), 225)
    page.paste(Image.fromarray(255 - digits[0]).resize((2_400, 2_400)), (1_800, 800))
    assert DEFAULT_LIMITS.max_lossless_pixels < 6_000 * 4_000
    assert decodes(encode(page, "JPEG", quality=85)) == [("JPEG", (6_000, 4_000))]


def test_the_stricter_of_the_pixel_limits_holds() -> None:
    image = encode(Image.new("L", (200, 100), 255), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(image, Limits(max_pixels=19_999, max_lossless_pixels=10**9))


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_animations_decode_their_first_frame_only(digits, fmt: str) -> None:
    first, second = (Image.fromarray(d).resize((112, 112)) for d in digits)
    animation = encode(first, fmt, save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(animation)).n_frames == 2
    with watch_pillow() as (_, loaded):
        ink = decode_image(animation)
    assert {frame for _, frame in loaded} == {0}
    assert np.array_equal(ink, decode_image(encode(first, fmt)))


def test_apng_canvas_is_refused_before_loading() -> None:
    frames = [Image.new("L", (200, 100), v) for v in (255, 0, 128)]
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    refused_unloaded(apng, Limits(max_lossless_pixels=19_999))


@pytest.mark.parametrize("make", [bombs.bmp_rle_rows, bombs.bmp_rle4_runs], ids=["rle8", "rle4"])
def test_rle_bitmap_bombs_are_refused_before_opening(make) -> None:
    error = refused_unopened(make())
    assert "compressed BMP" in str(error)


@pytest.mark.parametrize(
    ("make", "words"),
    [(bombs.png_chunk_bomb, "chunks"), (bombs.gif_comment_bomb, "extension blocks")],
    ids=["png-chunks", "gif-sub-blocks"],
)
def test_structure_bombs_are_refused_before_opening(make, words: str) -> None:
    error = refused_unopened(make(20_000 if make is bombs.png_chunk_bomb else 70_000))
    assert words in str(error)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_ordinary_structure_is_fine(digits, fmt: str) -> None:
    image = Image.fromarray(digits[0]).resize((112, 112))
    # Many IDAT chunks, text, a comment, a loop extension: a busy but ordinary file.
    extra = {"PNG": {"pnginfo": PngImagePlugin.PngInfo()}, "GIF": {"comment": b"x" * 5000}}[fmt]
    if fmt == "PNG":
        for i in range(50):
            extra["pnginfo"].add_text(f"key{i}", "value" * 100, zip=i % 2 == 0)
    data = encode(image, fmt, save_all=True, append_images=[image], loop=0, **extra)
    assert decodes(data)
    assert np.array_equal(decode_image(data), decode_image(encode(image, fmt)))


def test_small_rle_bitmap_still_decodes() -> None:
    assert decodes(bombs.bmp_rle_rows((300, 200))) == [("BMP", (300, 200))]


def test_png_stream_inflating_past_its_size_decodes_only_the_declared_pixels() -> None:
    bomb = bombs.png_idat_bomb((300, 200), 64 << 20)
    assert decodes(bomb) == [("PNG", (300, 200))]


def test_png_text_chunks_are_bounded_by_pillow() -> None:
    # Pillow inflates each text chunk up to MAX_TEXT_CHUNK and all of them up to
    # MAX_TEXT_MEMORY while reading the header; the budget relies on those bounds.
    assert PngImagePlugin.MAX_TEXT_CHUNK <= 1 << 20
    assert PngImagePlugin.MAX_TEXT_MEMORY <= 64 << 20
    with watch_pillow() as (_, loaded), pytest.raises(ImageError):
        decode_image(bombs.png_text_bomb(80, 1 << 20))
    assert loaded == []
