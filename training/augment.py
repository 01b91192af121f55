"""Training-time augmentation for what normalisation cannot remove.

Pre-processing already fixes scale, position and polarity; what is left in real
handwriting is slant (rotation), pen width and imperfect centring/scaling. Each
transformation can be switched off from the MLproject parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    rotation_deg: float = 15.0  # the real-world yardstick is ±15°
    shift: float = 0.08  # fraction of the 28 px side
    scale: float = 0.08  # ± fraction
    stroke: bool = True  # random thickening / thinning
    fraction: float = 0.5  # share of each batch that is augmented; the rest stays clean MNIST

    @property
    def enabled(self) -> bool:
        return self.fraction > 0 and bool(
            self.rotation_deg or self.shift or self.scale or self.stroke
        )


def _stroke_width(batch: tf.Tensor) -> tf.Tensor:
    """Per image, one quarter each: a marker (3×3 grey dilation, about +2 px), a bolder pen
    (2×2, about +1 px), a finer pen (2×2 grey erosion) or the stroke as it is."""
    marker = tf.nn.max_pool2d(batch, ksize=3, strides=1, padding="SAME")
    bold = tf.nn.max_pool2d(batch, ksize=2, strides=1, padding="SAME")
    thin = -tf.nn.max_pool2d(-batch, ksize=2, strides=1, padding="SAME")
    # Thinning can erase faint strokes entirely: keep it only where ink survives.
    thin = tf.where(tf.reduce_max(thin, axis=[1, 2, 3], keepdims=True) > 0.5, thin, batch)
    choice = tf.random.uniform([tf.shape(batch)[0], 1, 1, 1], maxval=4, dtype=tf.int32)
    return tf.where(
        choice == 0, marker, tf.where(choice == 1, bold, tf.where(choice == 2, thin, batch))
    )


def layers_for(aug: Augmentation, seed: int) -> keras.Sequential:
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
    return keras.Sequential(steps, name="augmentation")


def dataset(x, y, batch_size: int, aug: Augmentation, seed: int) -> tf.data.Dataset:
    """Shuffled, batched, augmented on the fly (a new draw each epoch)."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    ds = ds.batch(batch_size)
    if aug.enabled:
        geometric = layers_for(aug, seed)

        def apply(images, labels):
            changed = geometric(images, training=True)
            if aug.stroke:
                changed = _stroke_width(changed)
            # Keep part of every batch clean so the network still sees MNIST as it is.
            pick = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < aug.fraction
            return tf.clip_by_value(tf.where(pick, changed, images), 0.0, 1.0), labels

        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
