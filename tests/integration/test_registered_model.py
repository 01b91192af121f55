"""The same registered model outside our service: notebook, `mlflow models serve`, evaluate."""

from __future__ import annotations

import base64
import io

import mlflow
import numpy as np
import pandas as pd
import requests
from PIL import Image

from tests.support import TRAINING_TIMEOUT_S, run_checked, start_scorer


def _png(digit: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    return buf.getvalue()


def test_notebook_load_model_accepts_arrays_bytes_and_base64(registry, mnist):
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    for uri in ("models:/digits/Production", "models:/digits@production"):
        model = mlflow.pyfunc.load_model(uri)
        x, y = mnist.x_test[:200], mnist.y_test[:200]
        from_arrays = model.predict({"image": x})
        assert list(from_arrays.columns) == [
            "digit",
            "confidence",
            "probabilities",
            "no_digit",
            "not_digit_score",
            "error",
            "error_message",
        ]
        # The bare array, as a notebook passes it.
        assert list(model.predict(x)["digit"]) == list(from_arrays["digit"])
        assert np.mean(from_arrays["digit"].to_numpy() == y) > 0.85
        pngs = [_png(d) for d in x[:20]]
        from_bytes = model.predict(pd.DataFrame({"image": pngs}))
        from_b64 = model.predict(
            pd.DataFrame({"image": [base64.b64encode(p).decode() for p in pngs]})
        )
        assert list(from_bytes["digit"]) == list(from_arrays["digit"][:20])
        assert list(from_b64["digit"]) == list(from_arrays["digit"][:20])


def test_mlflow_models_serve_answers_with_the_same_model(registry, seed_png, tmp_path):
    blank = base64.b64encode(_png(np.zeros((28, 28), np.uint8))).decode()
    seed = base64.b64encode(seed_png).decode()
    with start_scorer(registry.env, tmp_path) as (url, _):
        payload = {"dataframe_split": {"columns": ["image"], "data": [[seed]]}}
        response = requests.post(f"{url}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert prediction["digit"] == 9
        assert len(prediction["probabilities"]) == 10
        assert prediction["error"] is None
        # One image without a digit, one that is no image: their rows say so, the rest answer.
        rows = [[seed], [blank], [base64.b64encode(b"no image").decode()], [seed]]
        payload = {"dataframe_split": {"columns": ["image"], "data": rows}}
        response = requests.post(f"{url}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        assert "Traceback" not in response.text
        answers = response.json()["predictions"]
        assert [a["error"] for a in answers] == [None, "no_digit", "unsupported_format", None]
        assert [a["digit"] for a in answers] == [9, None, None, 9]
        # A bare (N, 28, 28) array as tensor input, as a notebook's x_test is sent.
        payload = {"inputs": [np.zeros((28, 28), np.uint8).tolist(), _seed_pixels(seed_png)]}
        response = requests.post(f"{url}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        answers = response.json()["predictions"]
        assert [a["error"] for a in answers] == ["no_digit", None]
        assert answers[1]["digit"] == 9


def _seed_pixels(png: bytes) -> list:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image).tolist()


def test_evaluate_entry_point_logs_accuracy(registry, mnist_path):
    out = run_checked(
        # 100 digits per variant: the entry point's path, not its default 2,000 (17 variants).
        registry.mlflow_run("evaluate", data_path=mnist_path, wild_limit=100),
        env=registry.env,
        timeout=TRAINING_TIMEOUT_S,
    )
    assert "test_accuracy" in out
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name("digits")
    runs = client.search_runs(
        [experiment.experiment_id], "params.model_uri = 'models:/digits/Production'"
    )
    assert runs and runs[0].data.metrics["test_accuracy"] > 0.85


def test_promote_sets_stage_and_alias(registry):
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    version = client.get_model_version("digits", "1")
    assert version.current_stage == "Production"
    assert "production" in version.aliases


def test_training_run_has_report_plots_and_a_model_card(registry, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    version = client.get_model_version("digits", "1")
    run = client.get_run(version.run_id)
    reports = {a.path for a in client.list_artifacts(version.run_id, "reports")}
    assert reports == {
        "reports/confusion_matrix.png",
        "reports/misclassified.png",
        "reports/learning_curves.png",
    }
    for path in sorted(reports):
        local = client.download_artifacts(version.run_id, path, str(tmp_path))
        with Image.open(local) as image:
            assert image.format == "PNG"
            assert image.width >= 800 and image.height >= 500
    accuracy = run.data.metrics["test_accuracy"]
    assert f"{accuracy:.4f}" in version.description
    assert "mlflow run . -e train" in version.description
    card = client.download_artifacts(version.run_id, "model_card.md", str(tmp_path))
    with open(card) as f:
        assert version.description.startswith(f.read().rstrip())


def test_onnx_runtime_answers_as_the_keras_weights_do(model_dir, mnist, monkeypatch):
    # Both runtimes load the same registered version; only ONNX Runtime is used when present.
    from pyfunc import model as digit_model

    one_thread = {digit_model.THREADS_CONFIG: 1}
    assert (model_dir / "artifacts" / "mnist_cnn.onnx").is_file()
    served = mlflow.pyfunc.load_model(str(model_dir), model_config=one_thread)
    served = served.unwrap_python_model()
    assert served.runtime == "onnxruntime"
    monkeypatch.setattr(digit_model, "_has_onnxruntime", lambda: False)
    fallback = mlflow.pyfunc.load_model(str(model_dir), model_config=one_thread)
    fallback = fallback.unwrap_python_model()
    assert fallback.runtime == "tensorflow"
    batch = served.pre_process(mnist.x_test[:256])
    np.testing.assert_allclose(
        served.probabilities(batch), fallback.probabilities(batch), rtol=0, atol=1e-5
    )
