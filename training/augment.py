"""Training-time augmentation for what normalisation cannot remove.

Pre-processing already fixes scale, position and polarity; what is left in real
handwriting is slant (rotation), pen width and imperfect centring/scaling. Pen width is
changed before normalisation (training.strokes), the rest on the fly here. Each
transformation can be switched off from the MLproject parameters. Elastic distortions
(Simard, Steinkraus & Platt 2003) model the uneven wobble of a hand, which no affine
transformation does; they are off unless ``elastic_alpha`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

if TYPE_CHECKING:  # TensorFlow is imported where it runs: the options above need none
    import keras
    import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    rotation_deg: float = 15.0  # the real-world yardstick is ±15°
    shift: float = 0.08  # fraction of the 28 px side
    scale: float = 0.08  # ± fraction
    stroke: bool = True  # a bolder or finer pen, drawn at page scale (training.strokes)
    fraction: float = 0.5  # share of each batch that is augmented; the rest stays clean MNIST
    # Simard et al.'s alpha=34, sigma=4 (29x29) read with a normalised Gaussian: the smoothed
    # uniform(-1, 1) field has std 1/(sqrt(3)*2*sqrt(pi)*sigma) = 0.041, so 34 moves a pixel
    # by ~1.4 px (std per axis), a wobble of the pen; an unnormalised kernel would make it
    # ~100x that, i.e. noise. 34 is the value to try; 0 (off) until full runs decide.
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0  # pixels at 28x28: the field's smoothness (larger = stiffer)
    # Share of training digits also rendered as a phone photo (ruled or squared paper, a desk,
    # a shadow: training.photos) and pre-processed as the service would; each epoch shows that
    # copy in place of the digit half of the time. What pre-processing leaves of a ruling is
    # learnt here rather than removed at any cost to strokes.
    photos: float = 0.15

    @property
    def enabled(self) -> bool:
        transforms = self.rotation_deg or self.shift or self.scale or self.stroke
        return (self.fraction > 0 and bool(transforms or self.elastic_alpha)) or self.photos > 0


Seed: TypeAlias = "Sequence[int] | tf.Tensor"


def _gaussian(sigma: float, side: int) -> np.ndarray:
    """Normalised 1-D Gaussian cut at 3 sigma; taps more than side-1 away from the centre
    would only ever fall on the zero padding, so the radius stops there."""
    radius = max(1, min(math.ceil(3 * sigma), side - 1))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def displacement(
    n: tf.Tensor | int,
    height: int,
    width: int,
    alpha: float,
    sigma: float,
    seed_or_generator: Seed | tf.random.Generator,
) -> tf.Tensor:
    """Elastic displacement fields in pixels, shape (2, n, height, width): [0] is dy, [1] dx.

    ``seed_or_generator``: a stateless seed (two integers) or a ``tf.random.Generator``.
    """
    import tensorflow as tf

    # dx and dy come out of one draw, so they are independent fields; Keras' own elastic
    # transform reuses one seed for both and only ever displaces along the diagonal.
    shape = tf.stack([1, height, width, 2 * n])
    if isinstance(seed_or_generator, tf.random.Generator):
        noise = seed_or_generator.uniform(shape, -1.0, 1.0)
    else:
        noise = tf.random.stateless_uniform(shape, seed_or_generator, -1.0, 1.0)
    # The fields ride as channels of one image: a depthwise convolution over 2n channels
    # took ~5 ms per 128 images here, a plain conv2d over 2n one-channel images ~90 ms.
    taps = _gaussian(sigma, min(height, width))
    channels = tf.stack([1, 1, 2 * n, 1])
    column = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), channels)
    row = tf.tile(tf.reshape(taps, [1, -1, 1, 1]), channels)
    smooth = tf.nn.depthwise_conv2d(noise, column, [1, 1, 1, 1], "SAME")
    smooth = tf.nn.depthwise_conv2d(smooth, row, [1, 1, 1, 1], "SAME")
    return alpha * tf.reshape(tf.transpose(smooth[0], [2, 0, 1]), [2, n, height, width])


def warp(images: tf.Tensor, field: tf.Tensor) -> tf.Tensor:
    """``images`` (n, h, w, c) resampled at (y + dy, x + dx), bilinear, zero outside."""
    import tensorflow as tf

    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    rows, cols = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    # Anything beyond one pixel outside reads the same zero border as one pixel outside.
    y = tf.clip_by_value(rows + field[0], -1.0, float(height))
    x = tf.clip_by_value(cols + field[1], -1.0, float(width))
    y0, x0 = tf.floor(y), tf.floor(x)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    # One zero row/column before, two after: the clipped corners then always index inside.
    padded_w = width + 3
    flat = tf.reshape(tf.pad(images, [[0, 0], [1, 2], [1, 2], [0, 0]]), [-1, images.shape[3]])
    top_left = (
        (tf.range(n) * (height + 3) * padded_w)[:, None, None]
        + (tf.cast(y0, tf.int32) + 1) * padded_w
        + tf.cast(x0, tf.int32)
        + 1
    )
    # One flat gather of the four corners: ~3x faster here than keras.ops.image.map_coordinates.
    corners = tf.gather(
        flat, tf.stack([top_left, top_left + 1, top_left + padded_w, top_left + padded_w + 1])
    )
    top = (1 - fx) * corners[0] + fx * corners[1]
    bottom = (1 - fx) * corners[2] + fx * corners[3]
    return (1 - fy) * top + fy * bottom


def elastic(
    images: tf.Tensor,
    alpha: float,
    sigma: float,
    seed_or_generator: Seed | tf.random.Generator,
) -> tf.Tensor:
    """Simard et al.'s elastic distortion of a batch (n, h, w, c), a new field per image.

    ``alpha`` scales the field (pixels per unit of the smoothed uniform(-1, 1) noise),
    ``sigma`` is the Gaussian's std in pixels; alpha 0 returns ``images`` as they are.
    """
    import tensorflow as tf

    if not alpha:
        return images
    images = tf.convert_to_tensor(images, tf.float32)
    field = displacement(
        tf.shape(images)[0], images.shape[1], images.shape[2], alpha, sigma, seed_or_generator
    )
    return warp(images, field)


def layers_for(aug: Augmentation, seed: int) -> keras.Sequential | None:
    """The geometric part (rotation, zoom, shift); None when all three are off."""
    import keras

    steps: list[keras.layers.Layer] = []
    if aug.rotation_deg:
        steps.append(
            keras.layers.RandomRotation(aug.rotation_deg / 360.0, fill_mode="constant", seed=seed)
        )
    if aug.scale:
        steps.append(keras.layers.RandomZoom(aug.scale, fill_mode="constant", seed=seed + 1))
    if aug.shift:
        steps.append(
            keras.layers.RandomTranslation(
                aug.shift, aug.shift, fill_mode="constant", seed=seed + 2
            )
        )
    return keras.Sequential(steps, name="augmentation") if steps else None


def dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    aug: Augmentation,
    seed: int,
    x_pen: np.ndarray | None = None,
    x_photo: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Shuffled, batched, augmented on the fly (a new draw each epoch). ``x_pen`` holds the
    same digits drawn with another pen (training.strokes); three in four augmented images
    take it. ``x_photo`` holds the same digits as the service makes them out of a phone
    photo (the clean digit where none was rendered); it takes the digit's place half of
    the time, before the other transformations."""
    import tensorflow as tf

    use_pen = aug.enabled and aug.stroke and x_pen is not None
    use_photo = aug.enabled and aug.photos > 0 and x_photo is not None
    # The pen and photo copies ride along only when they are used.
    slices = (x, y) + ((x_pen,) if use_pen else ()) + ((x_photo,) if use_photo else ())
    ds = tf.data.Dataset.from_tensor_slices(slices).shuffle(len(x), seed=seed)
    ds = ds.batch(batch_size)
    geometric = layers_for(aug, seed)
    use_elastic = aug.enabled and aug.elastic_alpha > 0
    if use_elastic:
        # A key per batch, new each epoch (Keras starts a new iterator per epoch) and fixed by
        # the run's seed whatever order the parallel map calls run in.
        keys = tf.data.Dataset.random(seed=seed + 3, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, keys)

    def apply(images, labels, *copies, key=None):
        n = tf.shape(images)[0]
        pens = copies[0] if use_pen else None
        photo = tf.zeros([n, 1, 1, 1], tf.bool)
        if use_photo:
            photo = tf.random.uniform([n, 1, 1, 1]) < 0.5
            images = tf.where(photo, copies[-1], images)
        changed = images
        if use_pen:
            # A photo keeps its own pen.
            pen = (tf.random.uniform([n, 1, 1, 1]) < 0.75) & ~photo
            changed = tf.where(pen, pens, images)
        if use_elastic:
            stateless = tf.stack([key, tf.constant(seed, tf.int64)])
            changed = elastic(changed, aug.elastic_alpha, aug.elastic_sigma, stateless)
        if geometric is not None:
            changed = geometric(changed, training=True)
        # Keep part of every batch clean so the network still sees MNIST as it is.
        pick = tf.random.uniform([n, 1, 1, 1]) < aug.fraction
        return tf.clip_by_value(tf.where(pick, changed, images), 0.0, 1.0), labels

    if use_elastic:
        ds = ds.map(lambda batch, key: apply(*batch, key=key), num_parallel_calls=tf.data.AUTOTUNE)
    elif aug.enabled:
        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
