"""`python -m training.registry_status`: make serve's check for a Production model, and the
line it says on an empty registry before the first training."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import blank_tracking_database
from training import registry_status


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = blank_tracking_database(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_an_empty_registry_says_what_make_serve_does_next(empty: str, capsys):
    code = registry_status.main(["--first-start", "2", "--url", "http://127.0.0.1:8000"])
    out = capsys.readouterr().out.strip()
    assert code == 1
    assert out.startswith(f"make serve: no Production version of 'digits' in {empty} yet.")
    assert "2 epochs" in out and "on this machine" in out
    assert "promotion gate" in out and out.endswith("served on http://127.0.0.1:8000.")
    assert "\n" not in out


def test_without_first_start_it_only_reports(empty: str, capsys):
    assert registry_status.main([]) == 1
    assert capsys.readouterr().out == "digits: no Production version\n"


def test_a_password_in_the_registry_uri_is_not_shown(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://digits:s3cret@db:5432/mlflow")
    line = registry_status.first_start_message("digits", 1, "")
    assert "s3cret" not in line and "postgresql://db:5432/mlflow" in line
    assert "(1 epoch on" in line and line.endswith("then it is served.")
