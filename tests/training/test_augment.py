"""Elastic distortions (Simard, Steinkraus & Platt 2003) in the training pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pyfunc.preprocess import pre_process
from training.augment import Augmentation, _gaussian, dataset, displacement, elastic

pytestmark = pytest.mark.integration  # TensorFlow: the tf.data pipeline

SIMARD_ALPHA = 34.0  # the value README suggests when switching elastic distortions on

ONLY_ELASTIC = Augmentation(
    rotation_deg=0, shift=0, scale=0, stroke=False, fraction=1.0, elastic_alpha=SIMARD_ALPHA
)


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    return pre_process(mnist.x_train[:64])


def recovered_field(n: int, alpha: float, sigma: float, seed: tuple[int, int]) -> np.ndarray:
    """(2, n, 28, 28) dy, dx read back from warping coordinate ramps: bilinear interpolation
    reproduces a linear ramp exactly, so a warped ramp minus the ramp is the displacement.
    NaN where a sample touched the zero fill (a third plane of ones tells where)."""
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    planes = np.stack([rows, cols, np.ones_like(rows)], axis=-1)
    ramps = np.broadcast_to(planes, (n, 28, 28, 3))
    warped = elastic(tf.constant(ramps), alpha, sigma, seed).numpy()
    field = np.moveaxis(warped[..., :2] - ramps[..., :2], -1, 0)
    return np.where(warped[None, ..., 2] > 1 - 1e-5, field, np.nan)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def test_alpha_zero_leaves_images_unchanged(digits: np.ndarray) -> None:
    assert np.array_equal(np.asarray(elastic(digits, 0.0, 4.0, (1, 2))), digits)


def test_dx_and_dy_are_independent_smooth_fields() -> None:
    dy, dx = recovered_field(64, SIMARD_ALPHA, 4.0, (3, 4))
    assert np.isfinite(dy).mean() > 0.75  # lost only where samples cross the border
    # Keras' elastic transform draws both from one seed: corr 1, every move diagonal.
    assert abs(corr(dx, dy)) < 0.3
    for d in (dx, dy):
        assert corr(d[:, :, :-1], d[:, :, 1:]) > 0.9  # smooth along rows
        assert corr(d[:, :-1, :], d[:, 1:, :]) > 0.9  # and along columns
        # Neither the same field for every image nor a rigid shift of each image.
        assert abs(corr(d[:32], d[32:])) < 0.3
        assert np.nanstd(d - np.nanmean(d, axis=(1, 2), keepdims=True)) > 0.3


def test_alpha_is_in_pixels_of_a_normalised_gaussian() -> None:
    """Smoothing uniform(-1, 1) with a normalised Gaussian leaves std
    1/(sqrt(3)·2·sqrt(pi)·sigma), 0.041 at sigma 4: Simard's alpha 34 moves ~1.4 px (away
    from the border, where the zero padding damps the field)."""
    dy, dx = recovered_field(128, SIMARD_ALPHA, 4.0, (5, 6))
    expected = SIMARD_ALPHA / (np.sqrt(3) * 2 * np.sqrt(np.pi) * 4.0)
    for d in (dx, dy):
        assert np.nanstd(d[:, 8:20, 8:20]) == pytest.approx(expected, rel=0.15)
    # The helper that exposes the field is the one elastic() applies, dy to rows, dx to columns.
    exposed = displacement(128, 28, 28, SIMARD_ALPHA, 4.0, (5, 6)).numpy()
    seen = np.isfinite(dy)
    assert np.allclose(dy[seen], exposed[0][seen], atol=1e-3)
    assert np.allclose(dx[seen], exposed[1][seen], atol=1e-3)
    half_dy, half_dx = recovered_field(128, SIMARD_ALPHA / 2, 4.0, (5, 6))
    both = np.isfinite(dy) & np.isfinite(half_dy)
    assert np.allclose(half_dy[both], dy[both] / 2, atol=1e-3)  # same field, half the scale
    assert np.allclose(half_dx[both], dx[both] / 2, atol=1e-3)


@pytest.mark.parametrize("sigma", [0.5, 4.0, 30.0])
def test_gaussian_is_normalised_and_no_wider_than_useful(sigma: float) -> None:
    taps = _gaussian(sigma, 28)
    assert taps.sum() == pytest.approx(1.0)
    assert len(taps) % 2 == 1 and len(taps) <= 2 * 27 + 1
    assert np.allclose(taps, taps[::-1])


def test_a_warped_digit_keeps_its_ink(digits: np.ndarray) -> None:
    out = elastic(digits, SIMARD_ALPHA, 4.0, (7, 8)).numpy()
    assert out.shape == digits.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    ratio = out.sum(axis=(1, 2, 3)) / digits.sum(axis=(1, 2, 3))
    # Strokes stretch and squeeze locally; a digit as a whole neither fades nor smears.
    assert 0.9 < np.median(ratio) < 1.1, ratio
    assert np.mean((ratio > 0.8) & (ratio < 1.2)) >= 0.7, ratio
    assert ratio.min() > 0.5, ratio
    # A distortion, not a copy: most digits move by more than a faint blur would.
    moved = np.abs(out - digits).sum(axis=(1, 2, 3)) / digits.sum(axis=(1, 2, 3))
    assert np.median(moved) > 0.2, moved


def test_same_seed_same_warp_other_seed_other_warp(digits: np.ndarray) -> None:
    first = elastic(digits, SIMARD_ALPHA, 4.0, (9, 10)).numpy()
    assert np.array_equal(first, elastic(digits, SIMARD_ALPHA, 4.0, (9, 10)).numpy())
    assert not np.allclose(first, elastic(digits, SIMARD_ALPHA, 4.0, (9, 11)).numpy())


def test_a_generator_gives_a_new_warp_per_call_and_is_seeded(digits: np.ndarray) -> None:
    def two_calls(seed: int) -> tuple[np.ndarray, np.ndarray]:
        generator = tf.random.Generator.from_seed(seed)
        return tuple(elastic(digits, SIMARD_ALPHA, 4.0, generator).numpy() for _ in range(2))

    first, second = two_calls(1)
    assert not np.allclose(first, second)
    again = two_calls(1)
    assert np.array_equal(first, again[0]) and np.array_equal(second, again[1])


def _epoch(ds: tf.data.Dataset) -> np.ndarray:
    """One pass, images put back in index order (the labels are the indices)."""
    images, index = zip(*((x.numpy(), i.numpy()) for x, i in ds), strict=True)
    images, index = np.concatenate(images), np.concatenate(index)
    return images[np.argsort(index)]


def test_dataset_with_elastic_is_seeded_and_new_each_epoch(digits: np.ndarray) -> None:
    index = np.arange(len(digits))
    ds = dataset(digits, index, batch_size=24, aug=ONLY_ELASTIC, seed=5)
    first, second = _epoch(ds), _epoch(ds)
    assert first.shape == digits.shape
    assert not np.allclose(first, digits)  # every image is augmented (fraction 1)
    assert not np.allclose(first, second)  # a new field every epoch
    again = _epoch(dataset(digits, index, batch_size=24, aug=ONLY_ELASTIC, seed=5))
    assert np.array_equal(first, again)  # and the run's seed fixes them


def test_each_epoch_draws_new_fields_not_the_old_ones_reshuffled(digits: np.ndarray) -> None:
    """One batch of one digit repeated: the shuffle cannot move anything, so an epoch that
    reused the last epoch's fields would give the same batch."""
    same = np.repeat(digits[:1], 16, axis=0)
    ds = dataset(same, np.arange(16), batch_size=16, aug=ONLY_ELASTIC, seed=5)
    first, second = (next(iter(ds))[0].numpy() for _ in range(2))
    assert not np.allclose(first, second)


def test_dataset_batches_keep_shape_and_dtype(digits: np.ndarray) -> None:
    index = np.arange(len(digits))
    shapes = [
        (x.shape, x.dtype, y.shape, y.dtype)
        for x, y in dataset(digits, index, batch_size=24, aug=ONLY_ELASTIC, seed=5)
    ]
    full, last = ((24, 28, 28, 1), tf.float32, (24,), tf.int64), ((16, 28, 28, 1), tf.float32)
    assert shapes == [full, full, (*last, (16,), tf.int64)]


def test_dataset_with_every_augmentation_on(digits: np.ndarray) -> None:
    aug = Augmentation(elastic_alpha=SIMARD_ALPHA)
    assert aug.enabled
    ds = dataset(digits, np.arange(len(digits)), 32, aug, seed=0, x_pen=digits[::-1].copy())
    shapes = [(x.shape, x.dtype, y.shape) for x, y in ds]
    assert shapes == [((32, 28, 28, 1), tf.float32, (32,))] * 2


def test_no_share_augmented_means_no_elastic_either(digits: np.ndarray) -> None:
    none = Augmentation(elastic_alpha=SIMARD_ALPHA, fraction=0.0)
    batches = list(dataset(digits, np.arange(len(digits)), 64, none, seed=0))
    assert len(batches) == 1 and len(batches[0]) == 2
    images, index = (t.numpy() for t in batches[0])
    assert np.array_equal(images, digits[index])


def test_elastic_alone_enables_augmentation() -> None:
    off = Augmentation(rotation_deg=0, shift=0, scale=0, stroke=False, photos=0)
    assert not off.enabled
    assert Augmentation(
        rotation_deg=0, shift=0, scale=0, stroke=False, photos=0, elastic_alpha=1
    ).enabled
    assert Augmentation(rotation_deg=0, shift=0, scale=0, stroke=False, photos=0.1).enabled
    assert Augmentation().elastic_alpha == 0.0  # off unless asked for


def test_command_line_switches_reach_the_augmentation() -> None:
    from training.train import augmentation, parse_args

    on = augmentation(parse_args(["--elastic-alpha", "34", "--elastic-sigma", "5"]))
    assert (on.elastic_alpha, on.elastic_sigma) == (34.0, 5.0)
    assert augmentation(parse_args([])).elastic_alpha == 0.0
    master_off = augmentation(parse_args(["--augment", "false", "--elastic-alpha", "34"]))
    assert master_off.elastic_alpha == 0.0 and not master_off.enabled


def test_photo_copies_take_the_digits_place_about_half_of_the_time(digits: np.ndarray) -> None:
    """Only the photo copies switched on: each image is its MNIST self or its photo copy, the
    copy about half of the time, and the pen copy never replaces a photo."""
    photo = np.clip(digits + 0.5, 0, 1).astype(np.float32)  # tells the copies apart
    only_photos = Augmentation(rotation_deg=0, shift=0, scale=0, stroke=False, photos=1.0)
    ds = dataset(digits, np.arange(len(digits)), 64, only_photos, seed=0, x_photo=photo)
    shown = [0, 0]
    for _ in range(4):  # a new draw each epoch
        images, index = (t.numpy() for t in next(iter(ds)))
        as_photo = [np.allclose(img, photo[i]) for img, i in zip(images, index, strict=True)]
        as_is = [np.allclose(img, digits[i]) for img, i in zip(images, index, strict=True)]
        assert all(p != a for p, a in zip(as_photo, as_is, strict=True))
        shown[0] += sum(as_photo)
        shown[1] += len(images)
    assert 0.35 < shown[0] / shown[1] < 0.65, shown
    pens = Augmentation(rotation_deg=0, shift=0, scale=0, fraction=1.0, photos=1.0)
    ds = dataset(digits, np.arange(len(digits)), 64, pens, 0, x_pen=digits * 0, x_photo=photo)
    images, index = (t.numpy() for t in next(iter(ds)))
    as_photo = sum(np.allclose(img, photo[i]) for img, i in zip(images, index, strict=True))
    assert as_photo >= 16  # a pen copy (all zero here) would have replaced them


def test_the_photos_switch_reaches_the_augmentation() -> None:
    from training.train import augmentation, parse_args

    assert augmentation(parse_args(["--photos", "0.3"])).photos == 0.3
    assert augmentation(parse_args(["--augment", "false", "--photos", "0.3"])).photos == 0
