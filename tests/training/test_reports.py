"""Report figures and the model card from synthetic predictions (no training, no registry)."""

from __future__ import annotations

import io
import shlex
from dataclasses import replace

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.support import PROJECT_ROOT
from training import reports


def synthetic(n_per_digit: int = 40, wrong: int = 50, seed: int = 0) -> reports.Evaluation:
    """Confident, mostly right answers; ``wrong`` of them point at another digit."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_digit)
    predicted = y.copy()
    flip = rng.choice(len(y), wrong, replace=False)
    predicted[flip] = (y[flip] + rng.integers(1, 10, wrong)) % 10
    probs = np.full((len(y), 10), 0.02)
    probs[np.arange(len(y)), predicted] = rng.uniform(0.5, 0.99, len(y))
    return reports.Evaluation(y, probs / probs.sum(axis=1, keepdims=True))


class FakeModel:
    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = probabilities

    def predict(self, x, batch_size=None, verbose=0):
        assert len(x) == len(self.probabilities)
        return self.probabilities


HISTORY = {
    "loss": [0.6, 0.3, 0.2],
    "accuracy": [0.8, 0.9, 0.94],
    "val_loss": [0.2, 0.1, 0.08],
    "val_accuracy": [0.94, 0.97, 0.98],
}


def png_size(fig) -> tuple[int, int]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    image = Image.open(io.BytesIO(buf.getvalue()))
    assert image.format == "PNG"
    return image.size


def expected_size(fig) -> tuple[int, int]:
    width, height = fig.get_size_inches()
    return round(width * reports.DPI), round(height * reports.DPI)


def test_evaluation_counts_and_confusions():
    ev = synthetic()
    assert ev.confusion.sum() == 400
    assert np.trace(ev.confusion) == 350
    assert ev.accuracy == pytest.approx(350 / 400)
    assert all(0 <= a <= 1 for a in ev.per_digit_accuracy())
    top = ev.top_confusions(3)
    assert len(top) == 3
    assert all(t != p and n >= 1 for t, p, n in top)
    assert [n for _, _, n in top] == sorted((n for _, _, n in top), reverse=True)


def test_figures_are_pngs_of_the_expected_size():
    ev = synthetic()
    x = np.random.default_rng(1).uniform(0, 1, (len(ev.y_true), 28, 28, 1)).astype(np.float32)
    evaluation, figs = reports.figures(FakeModel(ev.probabilities), x, ev.y_true, HISTORY)
    assert evaluation.accuracy == ev.accuracy
    assert set(figs) == set(reports.REPORT_PATHS)
    for fig in figs.values():
        width, height = png_size(fig)
        assert (width, height) == expected_size(fig)
        assert width >= 800 and height >= 500


def test_confusion_matrix_annotates_every_count():
    ev = synthetic()
    fig = reports.confusion_matrix_figure(ev)
    (ax, _colorbar) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 100
    assert sorted(map(int, texts)) == sorted(ev.confusion.ravel().tolist())
    assert ax.get_xlabel() == "predicted digit" and ax.get_ylabel() == "true digit"


def test_misclassified_grid_shows_at_most_36_most_confident_first():
    ev = synthetic(wrong=50)
    x = np.zeros((len(ev.y_true), 28, 28), dtype=np.uint8)
    fig = reports.misclassified_figure(x, ev)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 36
    wrong = np.flatnonzero(ev.y_pred != ev.y_true)
    first = wrong[np.argmax(ev.confidence[wrong])]
    assert titled[0].get_title() == f"pred {ev.y_pred[first]} / true {ev.y_true[first]}"


def test_misclassified_grid_without_mistakes_still_renders():
    ev = synthetic(wrong=0)
    fig = reports.misclassified_figure(np.zeros((len(ev.y_true), 28, 28)), ev)
    assert png_size(fig) == expected_size(fig)


def test_learning_curves_without_validation_data():
    fig = reports.learning_curves_figure({"loss": [0.5], "accuracy": [0.9]})
    loss_axes = fig.axes[0]
    assert [line.get_label() for line in loss_axes.get_lines()] == ["training"]
    assert png_size(fig) == expected_size(fig)


def test_log_all_logs_three_figures(monkeypatch):
    logged = []
    monkeypatch.setattr("mlflow.log_figure", lambda fig, path: logged.append(path))
    ev = synthetic()
    x = np.zeros((len(ev.y_true), 28, 28, 1), dtype=np.float32)
    reports.log_all(FakeModel(ev.probabilities), x, ev.y_true, HISTORY)
    assert sorted(logged) == sorted(reports.REPORT_PATHS.values())


def _args(**overrides):
    from training.train import parse_args

    args = parse_args(["--epochs", "3", "--limit", "8000", "--seed", "1"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.mark.integration  # TensorFlow, through training.train
def test_reproduce_command_names_every_mlproject_parameter():
    command = reports.reproduce_command(_args(), data_source="/data/mnist.npz")
    argv = shlex.split(command)
    assert argv[:5] == ["mlflow", "run", ".", "-e", "train"]
    given = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-P")
    spec = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
    assert set(given) == set(spec["entry_points"]["train"]["parameters"])
    assert given["epochs"] == "3" and given["limit"] == "8000" and given["seed"] == "1"
    assert given["data_path"] == "/data/mnist.npz"  # from $MNIST_PATH, written out
    assert given["augment"] == "true"


@pytest.mark.integration  # TensorFlow, through training.train
def test_model_card_has_data_parameters_metrics_and_the_command():
    ev = synthetic()
    params = {
        "epochs": "3",
        "batch_size": "128",
        "train_images": "7200",
        "limit": "8000",
        "validation_split": "0.1",
        "data_source": "/data/mnist.npz",
        "learning_rate": "0.001",
        "lr_schedule": "cosine",
        "aug_rotation_deg": "12.0",
        "aug_shift": "0.08",
        "aug_scale": "0.08",
        "aug_stroke": "True",
        "aug_fraction": "0.5",
        "aug_elastic_alpha": "34.0",
        "aug_elastic_sigma": "4.0",
        "seed": "1",
        "rotation": "12",  # as `mlflow run` logs its entry-point parameters: not listed twice
        "elastic_alpha": "34",
    }
    metrics = {"test_accuracy": 0.98765, "test_loss": 0.04, "train_seconds": 61.2}
    metrics |= {"loss": 0.2, "accuracy": 0.94, "val_loss": 0.08, "val_accuracy": 0.98}
    command = reports.reproduce_command(_args(), data_source="/data/mnist.npz")
    facts = reports.CardFacts(
        name="digits",
        version="7",
        run_id="abc123",
        params=params,
        metrics=metrics,
        evaluation=ev,
        reproduce=command,
        validation_images=800,
        environment=reports.environment(),
        git_commit="0123abcd",
    )
    card = reports.model_card(facts)
    assert card.startswith("# digits v7")
    for section in ("## Data", "## Parameters", "## Metrics", "## How it was trained"):
        assert section in card
    assert "0.9877" in card and "98.77 %" in card
    assert "/data/mnist.npz" in card and "7200" in card and "800" in card
    assert "rotation ±12°, shift ±8 % of the side" in card and "on 50 % of each batch" in card
    assert "61 s" in card
    assert "git checkout 0123abcd" in card and command in card
    assert "TensorFlow" in card and "Python" in card
    assert "| rotation |" not in card and "| aug_rotation_deg | 12.0 |" in card
    assert "elastic distortion (alpha 34, sigma 4 px)" in card and "| elastic_alpha |" not in card
    assert "Feedback" not in card
    assert "adam at 0.001" in card and "cross-entropy." in card and "EMA" not in card
    assert len(card) <= reports.MAX_CARD_CHARS

    tuned = {
        "opt_learning_rate": "0.002",
        "opt_label_smoothing": "0.1",
        "opt_ema_momentum": "0.999",
    }
    # as `mlflow run` logs the entry point's own parameters: not listed twice
    tuned |= {"learning_rate": "2e-3", "label_smoothing": "0.1", "ema_momentum": "0.999"}
    tuned_card = reports.model_card(replace(facts, params={**params, **tuned}))
    assert "cross-entropy with label smoothing 0.1." in tuned_card
    assert "adam at 0.002" in tuned_card and "(EMA, momentum 0.999)" in tuned_card
    assert "| opt_label_smoothing | 0.1 |" in tuned_card and "| label_smoothing |" not in tuned_card
    assert "ensemble" not in card

    three = reports.model_card(
        replace(
            facts,
            params={**params, "members": "3"},
            metrics={**metrics, "ensemble_val_accuracy": 0.9912, "ensemble_val_loss": 0.03},
        )
    )
    assert "An ensemble of 3 such networks, seeds 1 onwards" in three
    assert "| validation, ensemble | 0.0300 | 99.12 % |" in three

    with_feedback = reports.model_card(replace(facts, params={**params, "feedback_images": "12"}))
    assert "12 user-labelled images" in with_feedback
    assert "-P feedback_path=" in with_feedback


def test_the_svm_card_says_how_the_svm_was_made_not_a_networks_recipe():
    params = {
        "family": "pca_svm",
        "model_summary": "scikit-learn: PCA of the normalised pixels, then an RBF SVM",
        "train_images": "54000",
        "validation_split": "0.1",
        "seed": "42",
        "epochs": "0",  # logged by `mlflow run` for every family, ignored by this one
        "batch_size": "128",
        "ignored_params": "epochs,batch_size",
        "opt_pca_components": "50",
        "opt_svm_c": "10",
        "svm_kernel": "rbf",
        "svm_gamma": "scale",
        "softmax_temperature": "0.4321",
    }
    facts = reports.CardFacts(
        name="digits",
        version="3",
        run_id="def456",
        params=params,
        metrics={"test_accuracy": 0.9854, "val_accuracy": 0.9878},
        evaluation=synthetic(),
        reproduce="mlflow run . -e train -P family=pca_svm",
        validation_images=6000,
    )
    card = reports.model_card(facts)
    assert "(pca_svm)" in card
    assert "PCA to 50 components, RBF kernel, C 10, gamma scale, seed 42" in card
    assert "temperature 0.432" in card and "| validation | – | 98.78 % |" in card
    named = "\n".join(line for line in card.splitlines() if "ignored_params" not in line)
    for keras_only in ("epochs", "batch_size", "cross-entropy", "adam", "Augmentation"):
        assert keras_only not in named, keras_only
    assert "| ignored_params | epochs,batch_size |" in card
    assert "| opt_pca_components | 50 |" in card
