"""Training-time augmentation for what normalisation cannot remove.

Pre-processing already fixes scale, position and polarity; what is left in real
handwriting is slant (rotation), pen width and imperfect centring/scaling. Pen width is
changed before normalisation (training.strokes), the rest on the fly here. Each
transformation can be switched off from the MLproject parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    rotation_deg: float = 15.0  # the real-world yardstick is ±15°
    shift: float = 0.08  # fraction of the 28 px side
    scale: float = 0.08  # ± fraction
    stroke: bool = True  # a bolder or finer pen, drawn at page scale (training.strokes)
    fraction: float = 0.5  # share of each batch that is augmented; the rest stays clean MNIST

    @property
    def enabled(self) -> bool:
        return self.fraction > 0 and bool(
            self.rotation_deg or self.shift or self.scale or self.stroke
        )


def layers_for(aug: Augmentation, seed: int) -> keras.Sequential | None:
    """The geometric part (rotation, zoom, shift); None when all three are off."""
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
) -> tf.data.Dataset:
    """Shuffled, batched, augmented on the fly (a new draw each epoch). ``x_pen`` holds the
    same digits drawn with another pen (training.strokes); three in four augmented images
    take it."""
    use_pen = aug.enabled and aug.stroke and x_pen is not None
    # The pen copy rides along only when it is used.
    slices = (x, y, x_pen) if use_pen else (x, y)
    ds = tf.data.Dataset.from_tensor_slices(slices).shuffle(len(x), seed=seed)
    ds = ds.batch(batch_size)
    geometric = layers_for(aug, seed)

    def apply(images, labels, pens=None):
        n = tf.shape(images)[0]
        changed = images
        if use_pen:
            changed = tf.where(tf.random.uniform([n, 1, 1, 1]) < 0.75, pens, images)
        if geometric is not None:
            changed = geometric(changed, training=True)
        # Keep part of every batch clean so the network still sees MNIST as it is.
        pick = tf.random.uniform([n, 1, 1, 1]) < aug.fraction
        return tf.clip_by_value(tf.where(pick, changed, images), 0.0, 1.0), labels

    if aug.enabled:
        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
