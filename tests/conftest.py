"""Shared fixtures: MNIST, a real MLflow registry with a tiny model built here, the app.

Two tiers. `make test-fast` (``pytest -m "not integration"``): unit and in-process tests, on
the tiny model of tests/tiny_model.py, without TensorFlow. ``integration``: tests that start
real processes (all of tests/integration/, whose conftest gives them a registry trained by the
real ``mlflow run``) or need TensorFlow. `make test` runs both.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

from tests.support import PROJECT_ROOT, Registry, database_url_for_tests, postgres_schema
from training.data import Mnist, load_mnist

# MLflow (through tests/tiny_model.py and pyfunc) is imported by the fixtures that use it,
# not here: pytest's main process reads this file before it starts the xdist workers and
# has no use for it (1.5-2.5 s of imports before any worker starts).

# `make test-fast`: everything but the slow tier, in which TensorFlow is too (importing it
# alone takes seconds). These modules import it as they are collected, before their
# ``integration`` mark can be read, so that selection leaves them uncollected, and
# tests/integration/ with them.
FAST_TIER = "not integration"
TENSORFLOW_MODULES = (
    "training/test_augment.py",
    "training/test_network.py",
    "training/test_strokes.py",
)
TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    # One BLAS thread per test process: with xdist's two workers on two cores, OpenBLAS's own
    # threads spin against each other (a 2,000-digit logistic fit in tests/tiny_model.py took
    # 7 s at a load average of 6, 0.1 s with one thread).
    threadpool_limits(limits=1)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.option.markexpr == FAST_TIER and collection_path.is_relative_to(TESTS):
        relative = collection_path.relative_to(TESTS).as_posix()
        # tests/integration/ is all slow tier (its conftest marks every test there):
        # importing its modules only to deselect them cost each worker half a second.
        if relative == "integration" or relative in TENSORFLOW_MODULES:
            return True
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The fast tier fails if it imported TensorFlow: a test that needs it is marked
    ``integration`` (and listed above if its module imports it)."""
    if session.config.option.markexpr == FAST_TIER and "tensorflow" in sys.modules:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.line("")
            reporter.write_sep(
                "!", "the fast tier imported TensorFlow: mark what needs it `integration`", red=True
            )


@pytest.fixture(scope="session", autouse=True)
def _image_log_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Apps and servers the tests start log their requests here, not in the project's data/,
    and the trainings they run keep their prepared copies here, not in the project's .cache/
    (set before any other fixture, so the registry's environment carries it too)."""
    saved = {k: os.environ.get(k) for k in ("DATA_DIR", "IMAGE_LOG_BACKEND", "DIGITS_CACHE_DIR")}
    os.environ["DATA_DIR"] = str(tmp_path_factory.mktemp("image-log"))
    os.environ["IMAGE_LOG_BACKEND"] = "sqlite"
    os.environ["DIGITS_CACHE_DIR"] = str(tmp_path_factory.mktemp("copies"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test PostgreSQL; its absence is a failure, not a skip (the machine runs one)."""
    import psycopg

    url = database_url_for_tests()
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL for the image log tests is not reachable at {url}: {exc}")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def image_log_config(request, tmp_path: Path) -> dict[str, object]:
    """Settings overrides for a fresh, empty image log of each backend."""
    if request.param == "sqlite":
        yield {"image_log_backend": "sqlite", "data_dir": tmp_path / "data"}
        return
    url = request.getfixturevalue("pg_url")
    with postgres_schema(url) as schema:
        yield {
            "image_log_backend": "postgres",
            "database_url": url,
            "database_schema": schema,
            "data_dir": tmp_path / "data",
        }


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    path = Path(os.environ.get("MNIST_PATH") or PROJECT_ROOT.parent / "shared/data/mnist.npz")
    if not path.is_file():
        pytest.fail(f"MNIST not found at {path}: set MNIST_PATH (see README)")
    return path.resolve()


@pytest.fixture(scope="session")
def mnist(mnist_path: Path) -> Mnist:
    return load_mnist(mnist_path)


@pytest.fixture(scope="session")
def small_mnist_path(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Path:
    """2,000 training digits (the last 200 the validation tail) and 1,000 test digits: the
    promotion gate's path on a tenth of the images, where what is tested is the path."""
    path = tmp_path_factory.mktemp("small-mnist") / "mnist.npz"
    np.savez(
        path,
        x_train=mnist.x_train[:2000],
        y_train=mnist.y_train[:2000],
        x_test=mnist.x_test[:1000],
        y_test=mnist.y_test[:1000],
    )
    return path


@pytest.fixture(scope="session")
def seed_png(mnist: Mnist) -> bytes:
    """The seed's example: MNIST test image #9 (a 9) as a 28×28 PNG."""
    buf = io.BytesIO()
    Image.fromarray(mnist.x_test[9]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Path:
    """The tiny softmax network of tests/tiny_model.py as an ONNX file, fitted once."""
    from tests import tiny_model

    path = tmp_path_factory.mktemp("tiny-model") / "tiny.onnx"
    return tiny_model.write_onnx(mnist.x_train, mnist.y_train, path)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path) -> Iterator[Registry]:
    """A fresh sqlite registry whose Production `digits` (version 1) is the tiny model,
    logged and promoted in this process in a few seconds.

    Nothing writes to it, so each version is loaded from it once per test process: about
    two hundred apps are created on it, and loading took most of each app's creation
    (0.1-0.3 s: the registry's lookups, the download, MLflow's check of the installed
    packages). Loading itself is tested on registries of their own (tests/serving/
    test_registry.py, test_model_store_last_good.py, test_families.py)."""
    from pyfunc import loading
    from tests import tiny_model

    reg = Registry.create(tmp_path_factory.mktemp("registry"))
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            loading,
            "load_version",
            _loaded_once(reg.tracking_uri, loading.load_version, tmp_path_factory.mktemp("loaded")),
        )
        yield reg


def _loaded_once(tracking_uri: str, load: Callable[..., Any], kept: Path) -> Callable[..., Any]:
    """``load`` (pyfunc.loading.load_version), each version of the registry at
    ``tracking_uri`` loaded once and the same model object given to every later caller;
    ``keep`` is called each time, with a copy of the first download. Other registries go
    to ``load``."""
    models: dict[tuple[str, str, int], Any] = {}

    def load_version(
        uri: str,
        name: str,
        version: str,
        threads: int = 0,
        keep: Callable[[Path], None] | None = None,
        work_dir: Path | None = None,
    ) -> Any:
        if uri != tracking_uri:
            return load(uri, name, version, threads, keep, work_dir)
        key = (name, version, threads)
        copy = kept / f"{name}-{version}-{threads}"
        if key not in models:
            models[key] = load(
                uri, name, version, threads, lambda path: shutil.copytree(path, copy), work_dir
            )
        if keep is not None:
            keep(copy)
        return models[key]

    return load_version


@pytest.fixture(scope="session")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry.create(tmp_path_factory.mktemp("empty-registry"))


@pytest.fixture
def app(registry: Registry):
    from serving import create_app, model_store

    app = create_app({"mlflow_tracking_uri": registry.tracking_uri, "workers": 1})
    app.config.update(TESTING=True)
    yield app
    model_store.close(app)


@pytest.fixture(autouse=True)
def _close_model_stores() -> Iterator[None]:
    """What a test's apps left running (a registry poller and a batcher thread each: 100-340
    threads per test worker by the end of a run) is stopped when the test ends."""
    before = _following()
    yield
    for store in _following() - before:
        store.close()


def _following() -> set[Any]:
    # Only once a test has imported it: no app, no poller (and no MLflow import here).
    module = sys.modules.get("serving.model_store")
    return set(module.following()) if module else set()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
