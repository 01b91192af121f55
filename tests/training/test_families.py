"""The family registry and its command line, and the scikit-learn family end to end in this
process (scikit-learn, no TensorFlow: the fast tier)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.pyfunc import PythonModelContext
from PIL import Image

from pyfunc.contract import OUTPUT_COLUMNS, is_digit_model
from pyfunc.preprocess import pre_process
from pyfunc.sklearn_family import SklearnDigitModel, softmax
from tests.support import PROJECT_ROOT
from training import families
from training.data import Mnist
from training.families import svm
from training.families.base import Job
from training.train import parse_args


def test_list_families_prints_one_name_a_line_without_tensorflow_or_sklearn() -> None:
    probe = (
        "import sys\n"
        "from training.train import main\n"
        "code = main(['--list-families'])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules]\n"
        "sys.exit(code or (3 if heavy else 0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["keras_example", "cnn_bn", "pca_svm"]


def test_the_default_family_is_a_known_one() -> None:
    assert families.DEFAULT_FAMILY in families.names()
    assert parse_args([]).family == families.DEFAULT_FAMILY


def test_an_unknown_family_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--family", "resnet"])
    with pytest.raises(families.UnknownFamily, match="keras_example, cnn_bn, pca_svm"):
        families.get("resnet")


@pytest.mark.parametrize(
    ("family", "epochs", "rate"), [("keras_example", 12, 1e-3), ("cnn_bn", 10, 2e-3)]
)
def test_options_left_at_zero_take_the_familys_defaults(
    family: str, epochs: int, rate: float
) -> None:
    resolved = families.resolve(parse_args(["--family", family]))
    assert (resolved.epochs, resolved.learning_rate) == (epochs, rate)
    given = families.resolve(parse_args(["--family", family, "--epochs", "3"]))
    assert given.epochs == 3 and given.learning_rate == rate


def test_each_family_reads_its_own_options_and_names_the_others_ignored() -> None:
    args = families.resolve(
        parse_args(["--family", "pca_svm", "--epochs", "7", "--pca-components", "30"])
    )
    svm_family = families.get("pca_svm")
    assert families.used(svm_family, args) == {"pca_components": 30, "svm_c": 10.0}
    assert "epochs" in families.ignored(svm_family)
    assert "pca_components" not in families.ignored(svm_family)
    cnn = families.get("cnn_bn")
    assert set(families.ignored(cnn)) == {"pca_components", "svm_c"}
    assert "pca_components" not in families.used(cnn, families.resolve(parse_args([])))


def test_mlproject_passes_the_family_and_every_family_option() -> None:
    spec = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]["train"]
    assert spec["parameters"]["family"]["default"] == families.DEFAULT_FAMILY
    for name in ("family", *families.FAMILY_OPTIONS, "rejector"):
        assert name in spec["parameters"], name
        assert f"--{name.replace('_', '-')} {{{name}}}" in spec["command"], name
    # What the entry point passes, train.py parses.
    argv = [
        f"--{k.replace('_', '-')}={v['default']}"
        for k, v in spec["parameters"].items()
        if str(v["default"]) != ""
    ]
    assert parse_args(argv).family == families.DEFAULT_FAMILY


# ----------------------------------------------------------------- the scikit-learn family


def _png(digit: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fitted_svm(mnist: Mnist, tmp_path_factory: pytest.TempPathFactory):
    """The family's own fit on 1,500 MNIST digits (300 held out), as train.py calls it."""
    x = pre_process(mnist.x_train[:1800])
    args = families.resolve(parse_args(["--family", "pca_svm", "--pca-components", "30"]))
    job = Job(
        args=args,
        x_train=x[:1500],
        y_train=mnist.y_train[:1500],
        x_val=x[1500:],
        y_val=mnist.y_train[1500:1800],
        x_test=np.zeros((0, 28, 28, 1), np.float32),
        y_test=np.zeros(0, np.int64),
        digits=mnist.x_train[:1500],
        out_dir=tmp_path_factory.mktemp("svm"),
    )
    return svm.fit(job)


def _loaded(fitted) -> SklearnDigitModel:
    model = fitted.python_model
    model.load_context(PythonModelContext(artifacts=fitted.artifacts, model_config={}))
    return model


def test_the_svm_family_reads_test_digits(fitted_svm, mnist: Mnist) -> None:
    model = _loaded(fitted_svm)
    assert is_digit_model(model) and model.family == "pca_svm"
    probs = model.probabilities(pre_process(mnist.x_test[:500]))
    assert probs.shape == (500, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)
    assert np.mean(probs.argmax(axis=1) == mnist.y_test[:500]) > 0.85  # ~0.9 from 1,500 digits
    assert fitted_svm.params["opt_pca_components"] == 30
    assert 0 < fitted_svm.params["softmax_temperature"] < svm.TEMPERATURES[-1]
    assert any(r.startswith("scikit-learn==") for r in fitted_svm.pip_requirements)
    assert not any(r.startswith(("onnxruntime", "tensorflow")) for r in fitted_svm.pip_requirements)


def test_the_svm_family_answers_the_contracts_columns(fitted_svm, mnist: Mnist) -> None:
    model = _loaded(fitted_svm)
    out = model.predict(None, pd.DataFrame({"image": [_png(mnist.x_test[0]), b"not an image"]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert out.loc[0, "error"] is None and out.loc[1, "error"] is not None
    bare = model.predict(None, mnist.x_test[:3])  # a notebook's (N, 28, 28) uint8 array
    assert len(bare) == 3 and list(bare["probabilities"].map(len)) == [10, 10, 10]


def test_the_fitted_temperature_beats_the_extremes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    scores = rng.normal(0, 1, (400, 10))
    scores[np.arange(400), labels] += 2.0  # informative but not certain
    best = svm.fit_temperature(scores, labels)

    def nll(t: float) -> float:
        return float(-np.mean(np.log(softmax(scores, t)[np.arange(400), labels])))

    assert nll(best) < nll(svm.TEMPERATURES[0]) and nll(best) < nll(svm.TEMPERATURES[-1])


def test_an_unloaded_svm_model_says_so() -> None:
    with pytest.raises(RuntimeError, match="not loaded"):
        SklearnDigitModel().probabilities(np.zeros((1, 28, 28, 1), np.float32))


def test_the_svm_holds_blas_to_the_services_thread_count_during_a_call_only(
    fitted_svm, mnist: Mnist
) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from pyfunc.contract import THREADS_CONFIG

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    model = fitted_svm.python_model
    model.load_context(
        PythonModelContext(artifacts=fitted_svm.artifacts, model_config={THREADS_CONFIG: 1})
    )
    pipeline, seen = model._pipeline, []

    class Watched:
        def decision_function(self, flat: np.ndarray) -> np.ndarray:
            seen.append(blas_threads())
            return pipeline.decision_function(flat)

    model._pipeline = Watched()
    with threadpool_limits(limits=2, user_api="blas"):  # the process's own setting
        assert blas_threads() == {2}
        model.probabilities(pre_process(mnist.x_test[:4]))
        assert seen == [{1}]
        assert blas_threads() == {2}
