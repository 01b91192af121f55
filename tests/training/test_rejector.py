"""training.rejector: the digits it is fitted on include phone photos of paper, built with
seeds of their own."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from training.rejector import PHOTO_VARIANTS, as_photos
from training.variants import VARIANTS


def _digits(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.zeros((n, 28, 28), np.uint8)
    for d in x:
        r0, c0 = rng.integers(4, 10, 2)
        d[r0 : r0 + 14, c0 : c0 + 4] = 255
    return x


def test_photo_digits_take_each_photo_variant_in_turn_and_are_reproducible() -> None:
    x = _digits(8)
    photos = as_photos(x)
    assert photos == as_photos(x)
    assert len(photos) == 8
    for data in photos:
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG"
    # Not the measured sets' images (those use a digit's index as its seed).
    for i, name in enumerate(PHOTO_VARIANTS):
        assert photos[i] != VARIANTS[name](x[i], i)
    # An offset continues the cycle: the chunks of one set line up with the whole.
    assert as_photos(x[4:], offset=4) == photos[4:]


def test_a_rejector_copy_names_its_sources_family(tmp_path):
    # training.rejector registers a copy of a version with a rejector: it is the same
    # network, so it must not fall back to the Keras example's name.
    from mlflow.models import Model

    from training.rejector import source_family

    Model(metadata={"family": "cnn_bn"}).save(str(tmp_path / "MLmodel"))
    assert source_family(tmp_path) == "cnn_bn"
    Model().save(str(tmp_path / "MLmodel"))  # logged before families existed
    assert source_family(tmp_path) == "keras_example"


def test_artifact_paths_name_the_network_beside_the_scored_graph(tmp_path):
    # A version logged with a rejector holds two ONNX files; the copy must take the network.
    from training.rejector import artifact_paths

    (tmp_path / "MLmodel").write_text(
        "flavors:\n"
        "  python_function:\n"
        "    loader_module: mlflow.pyfunc.model\n"
        "    artifacts:\n"
        "      onnx_model_scored: {path: artifacts/mnist_cnn_scored.onnx}\n"
        "      onnx_model: {path: artifacts/mnist_cnn.onnx}\n"
        "      keras_model: {path: artifacts/mnist_cnn.keras}\n"
    )
    paths = artifact_paths(tmp_path)
    assert paths["onnx_model"] == tmp_path / "artifacts" / "mnist_cnn.onnx"
    assert paths["onnx_model_scored"] == tmp_path / "artifacts" / "mnist_cnn_scored.onnx"
    assert paths["keras_model"] == tmp_path / "artifacts" / "mnist_cnn.keras"
