"""`python -m training.review`: held labels listed, accepted into the export, rejected out."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagelog import open_image_log
from tests.imagelog.samples import make_record
from training import review
from training.export_feedback import ExportSettings, export
from training.variants import png_bytes


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ExportSettings:
    # The command reads the image log from the environment, as the service does.
    monkeypatch.setenv("IMAGE_LOG_BACKEND", "sqlite")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    return ExportSettings()


def test_accepted_labels_are_exported_rejected_ones_never(
    settings: ExportSettings, mnist, tmp_path: Path, capsys
):
    with open_image_log(settings) as log:
        for i in range(3):
            log.record(make_record(f"r{i}", png_bytes(mnist.x_test[i]), digit=7))
            log.label(f"r{i}", 1, hold=True)
        assert export(log, tmp_path / "none.npz").count == 0
        held_ids = [h.id for h in log.held()]

    assert review.main(["list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in listed] == [str(i) for i in held_ids]
    assert "label 1\tmodel 7" in listed[0]

    assert review.main(["accept", str(held_ids[0])]) == 0
    assert review.main(["reject", str(held_ids[1])]) == 0
    assert review.main(["accept", "999999"]) == 1
    capsys.readouterr()

    with open_image_log(settings) as log:
        result = export(log, tmp_path / "after.npz")
        assert [h.request_id for h in log.held()] == ["r2"]
    assert result.count == 1
    assert review.main(["list", "--state", "rejected"]) == 0
    assert "r1" in capsys.readouterr().out
