"""Third-party noise filtered by message, real warnings and lines kept: each case runs in a
fresh interpreter, since the filters and the captured descriptor are process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT

ONEDNN = (
    "I0000 00:00:1796029834.430957   14621 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors."
)
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _run(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": f"{PROJECT_ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_noise_written_to_descriptor_2_during_an_import_is_dropped(tmp_path: Path):
    # A module that, like TensorFlow's C++ code, writes straight to descriptor 2 on import.
    (tmp_path / "noisy.py").write_text(
        "import os\n"
        f"os.write(2, {(ABSL + chr(10) + ONEDNN + chr(10)).encode()!r})\n"
        "os.write(2, b'E0000 a real error line\\n')\n"
    )
    stderr = _run(
        """
        import quiet
        quiet.install(modules=("noisy",))
        import noisy
        import os
        os.write(2, b"after the import\\n")
        """,
        tmp_path,
    )
    assert "oneDNN" not in stderr and "absl::InitializeLog" not in stderr
    assert stderr.splitlines() == ["E0000 a real error line", "after the import"]


def test_without_install_the_same_lines_show(tmp_path: Path):
    (tmp_path / "noisy.py").write_text(f"import os\nos.write(2, {(ONEDNN + chr(10)).encode()!r})\n")
    assert "oneDNN" in _run("import noisy", tmp_path)


def test_lines_written_by_a_failing_import_are_kept(tmp_path: Path):
    (tmp_path / "broken.py").write_text(
        "import os\nos.write(2, b'why it broke\\n')\nraise ImportError('broken')\n"
    )
    stderr = _run(
        """
        import quiet
        quiet.install(modules=("broken",))
        try:
            import broken
        except ImportError:
            pass
        """,
        tmp_path,
    )
    assert stderr.splitlines() == ["why it broke"]


def test_only_the_named_warnings_are_filtered(tmp_path: Path):
    stderr = _run(
        """
        import warnings
        import quiet
        quiet.install(modules=())
        warnings.warn("\\x1b[33mAdd type hints to the `predict` method to enable data "
                      "validation\\x1b[0m", UserWarning)
        warnings.warn("The specified dataset source can be interpreted in multiple ways: "
                      "LocalArtifactDatasetSource", UserWarning)
        warnings.warn("``MlflowClient.get_latest_versions`` is deprecated. Model registry "
                      "stages will be removed in a future major release.", FutureWarning)
        with warnings.catch_warnings():  # as MLflow's filter_user_warnings_once does
            warnings.simplefilter("once", category=UserWarning)
            warnings.warn("\x1b[33mAdd type hints to the `predict` method, once", UserWarning)
            warnings.warn("a real warning shown once", UserWarning)
        warnings.warn("a real warning the user should see", UserWarning)
        warnings.warn("Add type hints to the `predict` method", RuntimeWarning)
        """,
        tmp_path,
    )
    assert "a real warning the user should see" in stderr
    assert "a real warning shown once" in stderr and "method, once" not in stderr
    # The same words in another category are not the filtered warning.
    assert "RuntimeWarning: Add type hints" in stderr
    assert "UserWarning: \x1b[33mAdd type hints" not in stderr
    assert "interpreted in multiple ways" not in stderr
    assert "stages will be removed" not in stderr


def test_log_records_are_filtered_by_logger_and_message(tmp_path: Path):
    stderr = _run(
        """
        import logging
        import quiet
        quiet.install(modules=())
        quiet.install(modules=())  # twice: still one filter each
        assert len(logging.getLogger("mlflow.utils.git_utils").filters) == 1
        git = logging.getLogger("mlflow.utils.git_utils")
        git.warning("Failed to import Git (the Git executable is probably not on your PATH)")
        git.warning("a real problem with the repository")
        logging.getLogger("somebody.else").warning("Failed to import Git, says somebody else")
        """,
        tmp_path,
    )
    assert stderr.splitlines() == [
        "a real problem with the repository",
        "Failed to import Git, says somebody else",
    ]


@pytest.mark.integration
def test_tensorflows_start_up_lines_are_dropped(tmp_path: Path):
    code = "import quiet\nquiet.install()\nimport tensorflow\n"
    stderr = _run(code, tmp_path)
    assert "oneDNN" not in stderr and "absl::InitializeLog" not in stderr, stderr
    # TensorFlow imported this way still works and knows its own loader.
    _run(
        code + "import keras\nassert keras.ops.sum(keras.ops.ones(3)) == 3\n"
        "assert tensorflow.__spec__.loader.__class__.__name__ != '_FilteredLoader'\n",
        tmp_path,
    )


def test_python_m_quiet_runs_a_module_with_the_filters_set_before_its_imports(tmp_path: Path):
    # Like pyfunc.contract: MLflow warns while the module is imported, before any main().
    (tmp_path / "warns_on_import.py").write_text(
        "import warnings\nwarnings.warn('Add type hints to the `predict` method', UserWarning)\n"
    )
    (tmp_path / "tool.py").write_text(
        "import sys, warnings\nimport warns_on_import\n"
        "print(sys.argv[1:])\nwarnings.warn('a real one', UserWarning)\nsys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "quiet", "tool", "--epochs", "2"],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": f"{PROJECT_ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "['--epochs', '2']\n"
    assert "Add type hints" not in result.stderr
    assert "a real one" in result.stderr


def test_processes_spawned_under_python_m_quiet_filter_too(tmp_path: Path):
    # training spawns worker pools (training/photos.py, rejector.py, strokes.py): each
    # worker imports the project afresh, and MLflow warns again there.
    (tmp_path / "work.py").write_text(
        "import warnings\n"
        "def job(i):\n"
        "    warnings.warn('Add type hints to the `predict` method', UserWarning)\n"
        "    warnings.warn(f'a real one from worker {i}', UserWarning)\n"
        "    return i\n"
    )
    (tmp_path / "pool.py").write_text(
        "import multiprocessing\nfrom concurrent.futures import ProcessPoolExecutor\n"
        "import work\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    with ProcessPoolExecutor(2, mp_context=ctx) as pool:\n"
        "        print(sorted(pool.map(work.job, range(2))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "quiet", "pool"],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": f"{PROJECT_ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[0, 1]\n"
    assert "Add type hints" not in result.stderr
    assert "a real one from worker" in result.stderr
