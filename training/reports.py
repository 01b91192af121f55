"""What a training run leaves for people: report plots and a model card.

Plots, logged under ``reports/`` of the run: the test-split confusion matrix, a grid of the
misclassified test digits (most confident mistakes first) and the learning curves. The model
card (markdown: data, parameters, metrics, environment, the command that reproduces the
run) becomes the registered version's description and the run's ``model_card.md``.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``: no global backend switch, no figure registry to leak, safe off the main thread.
"""

from __future__ import annotations

import argparse
import platform
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NUM_CLASSES = 10
GRID_COLUMNS = 6
MAX_MISCLASSIFIED = 36
DPI = 120
REPORT_PATHS = {
    "confusion_matrix": "reports/confusion_matrix.png",
    "misclassified": "reports/misclassified.png",
    "learning_curves": "reports/learning_curves.png",
}
CARD_ARTIFACT = "model_card.md"
# Registry backends other than sqlite store descriptions in a VARCHAR(5000); the promotion
# gate appends its comparison to the same description, so the card leaves room for it.
MAX_CARD_CHARS = 3500


@dataclass(frozen=True)
class Evaluation:
    """The test split as the trained network sees it."""

    y_true: np.ndarray  # (N,) int
    probabilities: np.ndarray  # (N, 10)

    @property
    def y_pred(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.y_pred == self.y_true)) if len(self.y_true) else float("nan")

    @property
    def confusion(self) -> np.ndarray:
        """``[true, predicted]`` counts, 10×10."""
        matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        np.add.at(matrix, (self.y_true.astype(int), self.y_pred), 1)
        return matrix

    def per_digit_accuracy(self) -> list[float]:
        matrix = self.confusion
        totals = matrix.sum(axis=1)
        return [float(matrix[d, d] / totals[d]) if totals[d] else float("nan") for d in range(10)]

    def top_confusions(self, n: int = 5) -> list[tuple[int, int, int]]:
        """The most frequent ``(true, predicted, count)`` mistakes."""
        matrix = self.confusion.copy()
        np.fill_diagonal(matrix, 0)
        order = np.argsort(matrix, axis=None)[::-1][:n]
        pairs = [(int(i // 10), int(i % 10)) for i in order]
        return [(t, p, int(matrix[t, p])) for t, p in pairs if matrix[t, p] > 0]


def evaluate(model: Any, x_test: np.ndarray, y_test: np.ndarray) -> Evaluation:
    """Softmax outputs of a Keras model (anything with ``predict``) on the test split."""
    probabilities = np.asarray(model.predict(x_test, batch_size=512, verbose=0), dtype=np.float64)
    return Evaluation(np.asarray(y_test).astype(int), probabilities)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # an Agg canvas of its own: PNG output needs no pyplot backend
    return fig


def confusion_matrix_figure(evaluation: Evaluation) -> Figure:
    """10×10 counts, coloured by the share of each true digit (log scale, so that
    mistakes of a few per thousand still show next to a ~99 % diagonal)."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    matrix = evaluation.confusion
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    fig = _figure(7.5, 6.8)
    ax = fig.add_subplot()
    # Zero cells are masked: white, so only real mistakes get colour.
    image = ax.imshow(
        np.ma.masked_equal(share, 0),
        cmap=colormaps["Blues"].with_extremes(bad="white"),
        norm=LogNorm(vmin=1e-3, vmax=1),
    )
    for t in range(NUM_CLASSES):
        for p in range(NUM_CLASSES):
            count = int(matrix[t, p])
            dark = share[t, p] > 0.15
            ax.text(
                p,
                t,
                str(count),
                ha="center",
                va="center",
                fontsize=10 if count else 8,
                color="white" if dark else ("black" if count else "#b0b0b0"),
                fontweight="bold" if count and t != p else "normal",
            )
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_yticks(range(NUM_CLASSES))
    ax.tick_params(labelsize=11)
    ax.set_xlabel("predicted digit", fontsize=12)
    ax.set_ylabel("true digit", fontsize=12)
    n = len(evaluation.y_true)
    ax.set_title(
        f"Confusion matrix, MNIST test split\n"
        f"{n:,} images, accuracy {100 * evaluation.accuracy:.2f} %, "
        f"{int(n - np.trace(matrix)):,} mistakes",
        fontsize=13,
    )
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_ticks([1e-3, 1e-2, 1e-1, 1], labels=["0.1 %", "1 %", "10 %", "100 %"])
    bar.ax.minorticks_off()
    bar.set_label("share of the true digit's test images (log scale)", fontsize=10)
    return fig


def misclassified_figure(
    x_test: np.ndarray, evaluation: Evaluation, limit: int = MAX_MISCLASSIFIED
) -> Figure:
    """Up to ``limit`` wrongly classified test digits, the most confident mistakes first."""
    wrong = np.flatnonzero(evaluation.y_pred != evaluation.y_true)
    wrong = wrong[np.argsort(-evaluation.confidence[wrong], kind="stable")][:limit]
    rows = max(1, int(np.ceil(limit / GRID_COLUMNS)))
    fig = _figure(8.0, 1.6 * rows + 0.6)
    fig.suptitle(
        f"Misclassified test digits: {min(len(wrong), limit)} shown of "
        f"{int(np.sum(evaluation.y_pred != evaluation.y_true)):,}, most confident first",
        fontsize=13,
    )
    axes = fig.subplots(rows, GRID_COLUMNS, squeeze=False).ravel()
    for ax in axes[len(wrong) :]:
        ax.set_axis_off()
    if len(wrong) == 0:
        axes[0].text(0, 0.5, "no misclassified test digits", fontsize=12)
        return fig
    images = np.asarray(x_test, dtype=np.float32).reshape(len(x_test), 28, 28)
    if images.max() > 1:  # raw uint8 digits rather than the network's [0, 1] input
        images = images / 255.0
    for ax, i in zip(axes, wrong, strict=False):
        # Ink dark on white, as the digits were written; a light frame separates the cells.
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#c8c8c8")
        ax.set_title(
            f"pred {evaluation.y_pred[i]} / true {evaluation.y_true[i]}",
            fontsize=11,
            color="#b00020",
            pad=3,
        )
        ax.set_xlabel(f"confidence {evaluation.confidence[i]:.2f}", fontsize=8.5, color="#555555")
    return fig


def learning_curves_figure(
    history: Mapping[str, Sequence[float]], test_accuracy: float | None = None
) -> Figure:
    """Loss and accuracy per epoch, training against validation (Keras ``History.history``)."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig = _figure(11.0, 4.6)
    panels = fig.subplots(1, 2)
    for ax, metric, label in zip(panels, ("loss", "accuracy"), ("loss", "accuracy"), strict=True):
        for key, name, style in ((metric, "training", "o-"), (f"val_{metric}", "validation", "s-")):
            values = list(history.get(key, []))
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=name, linewidth=2)
        ax.set_xlabel("epoch", fontsize=11)
        ax.set_ylabel(label, fontsize=11)
        ax.set_title(label.capitalize(), fontsize=12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    panels[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    if test_accuracy is not None:
        panels[1].axhline(
            test_accuracy,
            color="#2a9d3f",
            linestyle="--",
            label=f"test ({100 * test_accuracy:.2f} %)",
        )
        low, high = panels[1].get_ylim()
        # Keep the test line off the frame when it is the highest value.
        panels[1].set_ylim(low, max(high, test_accuracy + 0.08 * (high - low)))
    for ax in panels:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=10)
    fig.suptitle(
        "Learning curves: training on augmented batches with dropout on, "
        "validation on clean held-out training images",
        fontsize=11,
    )
    return fig


def figures(
    model: Any,
    x_test: np.ndarray,
    y_test: np.ndarray,
    history: Mapping[str, Sequence[float]],
) -> tuple[Evaluation, dict[str, Figure]]:
    """The evaluation and the three report figures, keyed like :data:`REPORT_PATHS`."""
    evaluation = evaluate(model, x_test, y_test)
    return evaluation, {
        "confusion_matrix": confusion_matrix_figure(evaluation),
        "misclassified": misclassified_figure(x_test, evaluation),
        "learning_curves": learning_curves_figure(history, evaluation.accuracy),
    }


def log_all(
    model: Any,
    x_test: np.ndarray,
    y_test: np.ndarray,
    history: Mapping[str, Sequence[float]],
) -> Evaluation:
    """Log the report figures to the active MLflow run; returns the evaluation for the card."""
    import mlflow

    evaluation, figs = figures(model, x_test, y_test, history)
    for key, fig in figs.items():
        mlflow.log_figure(fig, REPORT_PATHS[key])
    return evaluation


# --- the model card ----------------------------------------------------------------------


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, gathered from the run (see :func:`publish_model_card`)."""

    name: str
    version: str
    run_id: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    evaluation: Evaluation
    reproduce: str
    validation_images: int
    environment: Mapping[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    trained_at: str | None = None


# Entry-point parameters that train.py also logs resolved (aug_*, data_source) or that the
# card states elsewhere (title, reproduce command): listed once, not twice.
_ENTRY_POINT_ALIASES = frozenset(
    {
        "augment",
        "rotation",
        "shift",
        "scale",
        "stroke",
        "augment_fraction",
        "elastic_alpha",
        "elastic_sigma",
        "learning_rate",
        "label_smoothing",
        "ema_momentum",
        "data_path",
        "model_name",
    }
)


def _pct(value: float | None) -> str:
    return "–" if value is None or np.isnan(value) else f"{100 * value:.2f} %"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _param(params: Mapping[str, str], name: str, default: str = "0") -> str:
    """A training option as train.py resolved it (``opt_*``; runs before those keys logged
    the entry point's own)."""
    return params.get(f"opt_{name}", params.get(name, default))


def _objective(params: Mapping[str, str]) -> str:
    smoothing = float(_param(params, "label_smoothing"))
    loss = "sparse categorical cross-entropy"
    return f"{loss} with label smoothing {smoothing:g}" if smoothing else loss


def _augmentation(params: Mapping[str, str]) -> str:
    if float(params.get("aug_fraction", 0) or 0) <= 0:
        return "none"

    def share(key: str) -> float:
        return float(params.get(key, 0) or 0)

    parts = []
    if share("aug_rotation_deg"):
        parts.append(f"rotation ±{share('aug_rotation_deg'):g}°")
    if share("aug_shift"):
        parts.append(f"shift ±{100 * share('aug_shift'):g} % of the side")
    if share("aug_scale"):
        parts.append(f"zoom ±{100 * share('aug_scale'):g} %")
    if str(params.get("aug_stroke", "")).lower() == "true":
        parts.append("bolder/finer pen at page scale")
    if share("aug_elastic_alpha"):
        parts.append(
            f"elastic distortion (alpha {share('aug_elastic_alpha'):g}, "
            f"sigma {share('aug_elastic_sigma'):g} px)"
        )
    if not parts:
        return "none"
    return ", ".join(parts) + f", on {100 * share('aug_fraction'):g} % of each batch"


def _is_network(params: Mapping[str, str]) -> bool:
    """Keras families log ``opt_epochs``, the scikit-learn one ``opt_pca_components``; runs
    from before the families were all networks."""
    return "opt_epochs" in params or "opt_pca_components" not in params


def _network_training(p: Mapping[str, str]) -> list[str]:
    return [
        "- Model: "
        + p.get(
            "model_summary",
            "`training/network.py` (Conv32 → Conv64 → MaxPool → Dropout 0.25 → "
            "Dense128 → Dropout 0.5 → softmax)",
        )
        + f", {_objective(p)}.",
        f"- {_param(p, 'epochs', '?')} epochs, batch {p.get('batch_size', '?')}, "
        f"{p.get('optimizer', 'adam')} at {_param(p, 'learning_rate', '?')} "
        f"({p.get('lr_schedule', 'constant')} decay to 0), seed {p.get('seed', '?')}"
        + (
            f", weights averaged (EMA, momentum {_param(p, 'ema_momentum')})."
            if float(_param(p, "ema_momentum", "0"))
            else "."
        ),
        f"- Augmentation: {_augmentation(p)}.",
    ]


def _svm_training(p: Mapping[str, str]) -> list[str]:
    return [
        f"- Model: {p.get('model_summary', 'scikit-learn pipeline')}.",
        f"- PCA to {p.get('opt_pca_components', '?')} components, "
        f"{p.get('svm_kernel', 'rbf').upper()} kernel, C {p.get('opt_svm_c', '?')}, "
        f"gamma {p.get('svm_gamma', '?')}, seed {p.get('seed', '?')}; probabilities are a "
        f"softmax of the decision scores at temperature "
        f"{float(p.get('softmax_temperature', 'nan')):.3g}, fitted on the validation digits.",
    ]


def model_card(facts: CardFacts) -> str:
    """The card as markdown: data, parameters, metrics, how it was trained and reproduced."""
    p, m, ev = facts.params, facts.metrics, facts.evaluation
    network = _is_network(p)
    # `mlflow run` logs every entry-point parameter; those this family ignored are named once,
    # in `ignored_params`, not listed as if they had shaped the model.
    ignored = set(p.get("ignored_params", "").split(","))
    test_accuracy = m.get("test_accuracy", ev.accuracy)
    lines = [
        f"# {facts.name} v{facts.version}: handwritten digit classifier "
        f"({p.get('family', 'keras_example')})",
        "",
        f"**Test accuracy {_pct(test_accuracy)}** (test_accuracy {test_accuracy:.4f}, "
        f"test loss {_num(m.get('test_loss'))}) on {len(ev.y_true):,} MNIST test images.",
        f"MLflow run `{facts.run_id}`"
        + (f", trained {facts.trained_at}" if facts.trained_at else "")
        + (f" in {m['train_seconds']:.0f} s" if "train_seconds" in m else "")
        + ".",
        "",
        "## Data",
        f"- Source: `{p.get('data_source', '?')}` (MNIST, Keras `.npz` layout).",
        f"- Training: {p.get('train_images', '?')} images"
        + (f" (first {p['limit']} of the training split)" if p.get("limit", "0") != "0" else "")
        + f"; validation: {facts.validation_images:,} (the last "
        f"{100 * float(p.get('validation_split', 0)):g} % of it); test: {len(ev.y_true):,} "
        "(the MNIST test split, only for final scores).",
        *(
            [
                f"- Feedback: {p['feedback_images']} user-labelled images from the image log, "
                "in the training split only (run artifact `feedback/feedback.npz`).",
            ]
            if int(p.get("feedback_images", 0) or 0)
            else []
        ),
        "- Input: 28×28 greyscale, normalised MNIST-style by `pyfunc/preprocess.py`, the same "
        "code that serves it.",
        "",
        "## Parameters",
        "| parameter | value |",
        "|---|---|",
        *(
            f"| {k} | {v} |"
            for k, v in sorted(p.items())
            if k not in _ENTRY_POINT_ALIASES and k not in ignored
        ),
        "",
        "## Metrics",
        "| split | loss | accuracy |",
        "|---|---:|---:|",
        *(
            [
                f"| training (last epoch) | {_num(m.get('loss'))} | {_pct(m.get('accuracy'))} |",
                f"| validation (last epoch) | {_num(m.get('val_loss'))} | "
                f"{_pct(m.get('val_accuracy'))} |",
            ]
            if network
            else [f"| validation | – | {_pct(m.get('val_accuracy'))} |"]
        ),
        *(
            [
                f"| validation, ensemble | {_num(m.get('ensemble_val_loss'))} | "
                f"{_pct(m.get('ensemble_val_accuracy'))} |"
            ]
            if "ensemble_val_accuracy" in m
            else []
        ),
        f"| test | {_num(m.get('test_loss'))} | {_pct(test_accuracy)} |",
        "",
        "Test accuracy per digit:",
        "",
        "| " + " | ".join(str(d) for d in range(10)) + " |",
        "|" + "---:|" * 10,
        "| " + " | ".join(f"{100 * a:.1f}" for a in ev.per_digit_accuracy()) + " |",
        "",
        "Most frequent mistakes (true → predicted): "
        + (", ".join(f"{t} → {pr} ({n})" for t, pr, n in ev.top_confusions()) or "none")
        + ".",
        "",
        "Plots in the run: " + ", ".join(f"`{path}`" for path in REPORT_PATHS.values()) + ".",
        "",
        "## How it was trained",
        *(_network_training(p) if network else _svm_training(p)),
        *(
            [
                f"- An ensemble of {members} such networks, seeds {p.get('seed', '?')} "
                f"onwards (each its own initial weights and augmentation draws), their "
                "probabilities averaged in one graph; training and validation rows above are "
                "the first network's.",
            ]
            if (members := int(p.get("members", 1) or 1)) > 1
            else []
        ),
        "- Environment: "
        + ", ".join(f"{k} {v}" for k, v in facts.environment.items())
        + ("." if facts.environment else "unknown."),
        "",
        "## Reproduce",
        "```sh",
        *([f"git checkout {facts.git_commit}"] if facts.git_commit else []),
        facts.reproduce,
        "```",
        *(
            [
                "",
                "The image log changes: for the same feedback images, download the run's "
                "`feedback/feedback.npz` and add `-P feedback_path=<that file>`.",
            ]
            if int(p.get("feedback_images", 0) or 0)
            else []
        ),
    ]
    card = "\n".join(lines) + "\n"
    if len(card) > MAX_CARD_CHARS:
        note = f"\n… (truncated; the full card is the run's `{CARD_ARTIFACT}`)\n"
        card = card[: MAX_CARD_CHARS - len(note)] + note
    return card


def environment() -> dict[str, str]:
    """Versions that decide whether a rerun gives the same model."""
    env = {"Python": platform.python_version()}
    for label, names in (
        ("TensorFlow", ("tensorflow-cpu", "tensorflow")),
        ("Keras", ("keras",)),
        ("MLflow", ("mlflow", "mlflow-skinny")),
        ("NumPy", ("numpy",)),
    ):
        for name in names:
            try:
                env[label] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    env["platform"] = f"{platform.system()} {platform.machine()}"
    return env


def _mlproject_parameters(entry_point: str) -> list[str] | None:
    import yaml

    from locations import PROJECT_ROOT

    path = Path(PROJECT_ROOT) / "MLproject"
    if not path.is_file():
        return None
    spec = yaml.safe_load(path.read_text())
    return list(spec.get("entry_points", {}).get(entry_point, {}).get("parameters", {}))


def reproduce_command(args: argparse.Namespace, data_source: str | None = None) -> str:
    """The ``mlflow run`` line that trains this model again: every MLproject parameter of the
    train entry point with this run's value (a parameter added later is picked up as is)."""
    values = vars(args)
    names = _mlproject_parameters("train") or [k for k in values if k != "experiment_name"]
    argv = ["mlflow", "run", ".", "-e", "train", "--env-manager", "local"]
    if values.get("experiment_name"):
        argv += ["--experiment-name", str(values["experiment_name"])]
    for name in names:
        if name not in values:
            continue
        value = values[name]
        if name == "data_path" and not value and data_source:
            value = data_source  # it came from $MNIST_PATH; say which file
        if isinstance(value, bool):
            value = "true" if value else "false"
        argv += ["-P", f"{name}={value}"]
    return shlex.join(argv)


def publish_model_card(
    args: argparse.Namespace,
    version: str,
    evaluation: Evaluation,
    validation_images: int,
) -> str:
    """Build the card from the active run, log it as ``model_card.md`` and make it the
    description of registered version ``version`` of ``args.model_name``."""
    import mlflow
    from mlflow import MlflowClient

    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("the model card is written from inside the training run")
    run_id = active.info.run_id
    client = MlflowClient()
    run = client.get_run(run_id)
    source = run.data.params.get("data_source")
    facts = CardFacts(
        name=args.model_name,
        version=str(version),
        run_id=run_id,
        params=run.data.params,
        metrics=run.data.metrics,
        evaluation=evaluation,
        reproduce=reproduce_command(args, source if source and Path(source).exists() else None),
        validation_images=validation_images,
        environment=environment(),
        git_commit=run.data.tags.get("mlflow.source.git.commit"),
        trained_at=datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
    )
    card = model_card(facts)
    mlflow.log_text(card, CARD_ARTIFACT)
    if args.model_name and str(version) not in ("", "None"):  # registered at all
        client.update_model_version(args.model_name, str(version), description=card)
    return card
