"""Labelled images from the image log → an MNIST-layout .npz that training accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagelog import open_image_log
from pyfunc.preprocess import pre_process
from tests.imagelog.samples import make_record
from training.data import DataError, load_feedback, load_mnist
from training.export_feedback import ExportSettings, export, export_configured, main
from training.feedback import load_for_training
from training.variants import png_bytes


@pytest.fixture
def settings(tmp_path: Path) -> ExportSettings:
    return ExportSettings(image_log_backend="sqlite", data_dir=tmp_path / "data")


def test_labelled_images_are_exported_as_mnist(settings: ExportSettings, mnist, tmp_path: Path):
    pngs = [png_bytes(mnist.x_test[i]) for i in range(4)]
    with open_image_log(settings) as log:
        for i, png in enumerate(pngs):
            log.record(make_record(f"r{i}", png))
        log.label("r0", 7)
        log.label("r2", 1)
        log.label("r2", 2)  # the latest label counts
        result = export(log, tmp_path / "out" / "feedback.npz")
    assert (result.count, result.skipped) == (2, 0)
    x, y = load_feedback(result.path)
    assert x.dtype == np.uint8 and x.shape == (2, 28, 28)
    assert y.tolist() == [7, 2]
    expected = np.round(pre_process([pngs[0], pngs[2]])[..., 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(x, expected)
    with np.load(result.path) as npz:
        assert npz["request_ids"].tolist() == ["r0", "r2"]
        assert npz["x_test"].shape == (0, 28, 28)
    assert load_for_training(str(result.path)).request_ids.tolist() == ["r0", "r2"]


def test_an_empty_log_exports_an_empty_set(settings: ExportSettings, tmp_path: Path):
    result = export_configured(tmp_path / "feedback.npz", settings)
    assert result.count == 0
    x, y = load_feedback(result.path)
    assert x.shape == (0, 28, 28) and y.shape == (0,)
    with pytest.raises(DataError, match="empty"):
        load_mnist(result.path)  # MNIST itself must still have both splits


def test_an_image_pre_process_now_refuses_is_skipped(settings: ExportSettings, tmp_path: Path):
    from tests.cases import BAD_IMAGES

    blank = next(case for case in BAD_IMAGES if case.id == "blank-white").body
    with open_image_log(settings) as log:
        log.record(make_record("blank", blank))
        log.label("blank", 0)
        result = export(log, tmp_path / "feedback.npz")
    assert (result.count, result.skipped) == (0, 1)


def test_the_command_reads_the_configured_log(
    settings: ExportSettings, mnist, tmp_path, monkeypatch
):
    with open_image_log(settings) as log:
        log.record(make_record("r", png_bytes(mnist.x_test[0])))
        log.label("r", 7)
    monkeypatch.setenv("IMAGE_LOG_BACKEND", "sqlite")
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    out = tmp_path / "cli.npz"
    assert main(["--out", str(out)]) == 0
    assert load_feedback(out)[1].tolist() == [7]


@pytest.mark.integration  # TensorFlow, through training.train
def test_an_unreachable_log_is_a_data_error_for_training(monkeypatch):
    from training.train import main

    monkeypatch.setenv("IMAGE_LOG_BACKEND", "postgres")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    monkeypatch.setenv("STORAGE_TIMEOUT_SECONDS", "1")
    with pytest.raises(DataError, match="cannot export feedback"):
        load_for_training("")
    assert main(["--include-feedback", "true", "--limit", "10", "--epochs", "0"]) == 2
