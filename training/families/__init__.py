"""Model families: each a way of turning MNIST into a registered digit pyfunc.

``python -m training.train --family NAME`` (``mlflow run . -e train -P family=NAME``) trains
one. This module only names them, the training options each reads and its own defaults: it
imports neither TensorFlow nor scikit-learn (``--list-families`` and the option parsing need
neither); a family's training code is imported when it trains (:func:`trainer`).

A family's ``fit`` gets the prepared data (:class:`~training.families.base.Job`) and returns
the unloaded pyfunc with its artifacts (:class:`~training.families.base.Fitted`); train.py
does the rest the same way for every family: the served model's test score, the reports, the
rejector, logging and registering.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The options of the Keras networks (training.train's argparse names) ...
KERAS_OPTIONS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "members",
    "label_smoothing",
    "ema_momentum",
    "augment",
    "rotation",
    "shift",
    "scale",
    "stroke",
    "augment_fraction",
    "elastic_alpha",
    "elastic_sigma",
    "photos",
)
# ... and of the scikit-learn family.
SKLEARN_OPTIONS = ("pca_components", "svm_c")
# Every option that belongs to some family; the others (data, seed, names) are everyone's.
FAMILY_OPTIONS = KERAS_OPTIONS + SKLEARN_OPTIONS
# Options whose 0 means "the family's own default" (the MLproject default is 0).
FAMILY_DEFAULTED = ("epochs", "learning_rate")


@dataclass(frozen=True)
class Family:
    name: str
    summary: str
    module: str  # the module whose ``fit(job)`` trains it
    options: tuple[str, ...]  # the family options it reads; the rest it ignores
    defaults: Mapping[str, Any] = field(default_factory=dict)  # for FAMILY_DEFAULTED


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "keras_example",
            "the Keras example CNN (Conv32, Conv64, MaxPool, Dense128), 1.2 M parameters",
            "training.families.keras",
            KERAS_OPTIONS,
            {"epochs": 12, "learning_rate": 1e-3},
        ),
        Family(
            "cnn_bn",
            "a batch-normalised CNN (3x3, 3x3, strided 5x5 convolutions twice, then 4x4), "
            "0.33 M parameters",
            "training.families.keras",
            KERAS_OPTIONS,
            {"epochs": 10, "learning_rate": 2e-3},
        ),
        Family(
            "pca_svm",
            "scikit-learn: PCA of the normalised pixels, then an RBF support-vector machine",
            "training.families.svm",
            SKLEARN_OPTIONS,
        ),
    )
}
# What `make train` and `make serve`'s quick model train: the best family measured
# (docs/model.md, "The families measured, and the default", says by how much).
DEFAULT_FAMILY = "cnn_bn"


class UnknownFamily(ValueError):
    pass


def names() -> list[str]:
    return list(FAMILIES)


def get(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(f"unknown family {name!r}; known: {', '.join(FAMILIES)}") from None


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the family's defaults where an option was left at 0."""
    family = get(args.family)
    values = vars(args).copy()
    for name, default in family.defaults.items():
        if not values.get(name):
            values[name] = default
    return argparse.Namespace(**values)


def ignored(family: Family) -> list[str]:
    """The family options this family does not read (set or not, they change nothing)."""
    return [name for name in FAMILY_OPTIONS if name not in family.options]


def used(family: Family, args: argparse.Namespace) -> dict[str, Any]:
    """The family's own options with the values it trains with."""
    return {name: getattr(args, name) for name in family.options}


def trainer(family: Family) -> Any:
    """The module that trains ``family`` (imported now: it may bring TensorFlow)."""
    return importlib.import_module(family.module)
