"""The Keras networks: the Keras example CNN (keras ``examples/mnist_cnn.py``) and a small
batch-normalised CNN (``cnn_bn``)."""

from __future__ import annotations

import keras
from keras import layers

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="digits")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against integer labels with label smoothing (Szegedy et al. 2016).

    Keras' sparse loss has no ``label_smoothing``; the dense one needs one-hot labels, which
    every dataset, the validation data and ``evaluate`` would then have to carry."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_crossentropy", **kw):
        super().__init__(name=name, **kw)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32")
        return keras.losses.categorical_crossentropy(
            keras.ops.one_hot(labels, NUM_CLASSES), y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def build_cnn(
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    label_smoothing: float = 0.0,
    ema_momentum: float = 0.0,
    name: str = "mnist_cnn",
) -> keras.Model:
    """Conv32 → Conv64 → MaxPool → Dropout .25 → Dense128 → Dropout .5 → softmax.

    ``label_smoothing`` > 0 trains against smoothed targets; ``ema_momentum`` > 0 keeps an
    exponential moving average of the weights, which become the model's at the end of fit.
    """
    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(32, kernel_size=3, activation="relu"),
            layers.Conv2D(64, kernel_size=3, activation="relu"),
            layers.MaxPooling2D(pool_size=2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name=name,
    )
    _compile(model, learning_rate, label_smoothing, ema_momentum)
    return model


def build_cnn_bn(
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    label_smoothing: float = 0.0,
    ema_momentum: float = 0.0,
    name: str = "mnist_cnn_bn",
) -> keras.Model:
    """Two blocks of 3×3, 3×3, strided 5×5 convolutions (32 then 64 filters), a 4×4 one of
    128, each followed by batch normalisation; ~0.33 M parameters.

    The layout of the best single Kaggle MNIST networks (C. Deotte, "How to choose CNN
    architecture MNIST", 2018): strided convolutions learn their own pooling, batch
    normalisation lets a high learning rate train it in few epochs. About the same
    multiply-adds per image as the Keras example (~15 M), so it costs as much to serve.
    """

    def conv(filters: int, size: int, strides: int = 1, padding: str = "valid") -> list:
        # No bias: the batch normalisation right after it has its own shift.
        return [
            layers.Conv2D(filters, size, strides=strides, padding=padding, use_bias=False),
            # Momentum 0.9 (PyTorch's default), not Keras' 0.99: the moving statistics that
            # inference uses must catch up within a run of a few hundred steps per epoch;
            # at 0.99 a 1-epoch run on 12,000 digits read 11 % of validation digits
            # (97 % in training mode), at 0.9 it read 96.5 %.
            layers.BatchNormalization(momentum=BN_MOMENTUM),
            layers.Activation("relu"),
        ]

    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            *conv(32, 3),
            *conv(32, 3),
            *conv(32, 5, strides=2, padding="same"),
            layers.Dropout(0.4),
            *conv(64, 3),
            *conv(64, 3),
            *conv(64, 5, strides=2, padding="same"),
            layers.Dropout(0.4),
            *conv(128, 4),
            layers.Flatten(),
            layers.Dropout(0.4),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name=name,
    )
    _compile(model, learning_rate, label_smoothing, ema_momentum)
    return model


def _compile(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    label_smoothing: float,
    ema_momentum: float,
) -> None:
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum else {}
    model.compile(
        loss=SmoothedSparseCrossentropy(label_smoothing)
        if label_smoothing
        else "sparse_categorical_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, **ema),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def ensemble(members: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the members' probabilities: a single graph, so
    the ONNX export, the pyfunc and every server run it as they run one network."""
    if len(members) == 1:
        return members[0]
    inputs = keras.Input(shape=INPUT_SHAPE)
    averaged = layers.Average()([member(inputs) for member in members])
    model = keras.Model(inputs, averaged, name=f"mnist_cnn_x{len(members)}")
    model.compile(
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


# The Keras families' networks (training.families), by family name.
BUILDERS = {"keras_example": build_cnn, "cnn_bn": build_cnn_bn}
