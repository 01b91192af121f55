"""How well a model says "I can't read this": non-digits refused or flagged against real
digits refused or flagged, and the trade-off curves of the candidate rules.

``python -m training.rejection --model-uri models:/digits/Production`` measures the test
digits (MNIST test, every client variant) and the measuring fonts' non-digits: the figures
to report, once per chosen model. ``--split validation`` uses the validation digits (the
tail of the training split) and the fitting fonts: where rules are compared and chosen.

An image counts as *refused* when the model answers ``no_digit`` (the pre-processing finds
no ink, or the model's rejector refuses it) and as *flagged* when it is answered with a
confidence under ``--low-confidence`` (the service's ``low_confidence_threshold``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from scipy import ndimage

from pyfunc.model import DigitModel
from pyfunc.preprocess import pre_process
from pyfunc.reject import Rejector
from training import nondigits
from training.data import VALIDATION_SPLIT, DataError, load_mnist, validation_size
from training.rejector import normalised
from training.variants import VARIANTS

SPLITS = {"test": "measure", "validation": "fit"}  # digits split -> non-digit fonts
QUANTILES = (0.9, 0.95, 0.98, 0.99, 0.995, 0.997, 0.998, 0.999, 1.0)
FLAGS = (0.5, 0.4, 0.35, 0.3, 0.25)
# Digit quantiles the trade-off table puts the rejector's threshold at.
TRADEOFF_QUANTILES = (0.99, 0.993, 0.995, 0.997, 0.998, 0.999)
TRADEOFF_FLAGS = (0.5, 0.4, 0.3, 0.0)


@dataclass
class Scored:
    """One set of images through the model: what the pre-processing refused, the
    normalised batch, the softmax, and the rejector's scores (NaN without one)."""

    name: str
    refused: np.ndarray  # (N,) bool: NoDigit or other image error from pre-processing
    batch: np.ndarray  # (N, 28, 28, 1); zeros where refused
    probs: np.ndarray  # (N, 10); uniform where refused
    scores: np.ndarray  # (N,) rejector P(no digit); NaN where refused or without rejector
    labels: np.ndarray  # digits, or "category:label" for non-digits

    def __len__(self) -> int:
        return len(self.refused)

    def subset(self, mask: np.ndarray, name: str) -> Scored:
        return Scored(
            name,
            self.refused[mask],
            self.batch[mask],
            self.probs[mask],
            self.scores[mask],
            self.labels[mask],
        )


def score(model: DigitModel, name: str, images: list[bytes], labels) -> Scored:
    batch, refused = normalised(images)
    probs = model.probabilities(batch)
    probs[refused] = 0.1
    rejector = getattr(model, "rejector", None)
    scores = np.full(len(images), np.nan)
    if rejector is not None:
        scores = rejector.scores(batch, probs)
        scores[refused] = np.nan
    return Scored(name, refused, batch, probs, scores, np.asarray(labels))


# --------------------------------------------------------------------------- rules


def rescored(sets: Sequence[Scored], rejector: Rejector) -> list[Scored]:
    """The same images and answers scored by another rejector: two rejectors of one network
    compared on the same sets, paired, without building them again."""
    out = []
    for s in sets:
        scores = rejector.scores(s.batch, s.probs).astype(np.float64)
        scores[s.refused] = np.nan
        out.append(Scored(s.name, s.refused, s.batch, s.probs, scores, s.labels))
    return out


def other_rejector(source: str) -> Rejector:
    """The rejector in an ``.npz`` file, or that of the model version at ``source``."""
    if Path(source).is_file():
        return Rejector.load(source)
    rejector = getattr(mlflow.pyfunc.load_model(source).unwrap_python_model(), "rejector", None)
    if rejector is None:
        raise SystemExit(f"{source} has no rejector")
    return rejector


def rejected(s: Scored, threshold: float) -> np.ndarray:
    """The rejector's refusals at ``threshold`` (none without a rejector's scores)."""
    if np.isnan(s.scores).all():
        return np.zeros(len(s), dtype=bool)
    return np.nan_to_num(s.scores, nan=0.0) > threshold


def outcome(s: Scored, low_confidence: float, threshold: float) -> dict[str, np.ndarray]:
    """Masks: refused by pre-processing, refused by the rejector, flagged low confidence."""
    pre = s.refused
    rej = ~pre & rejected(s, threshold)
    flag = ~pre & ~rej & (s.probs.max(axis=1) < low_confidence)
    return {"pre": pre, "rejector": rej, "flagged": flag, "any": pre | rej | flag}


def ink_features(batch: np.ndarray) -> np.ndarray:
    """Pre-processing evidence on the normalised 28×28: ink area, connected pieces, holes,
    mean stroke width (area / skeleton length) — (N, 4)."""
    from training.nondigits import skeleton

    rows = []
    for img in batch[..., 0]:
        ink = img > 0.35
        area = int(ink.sum())
        pieces = int(ndimage.label(ink, structure=np.ones((3, 3)))[1])
        background, count = ndimage.label(~ink)
        border = set(
            np.unique(
                np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
            )
        )
        holes = sum(1 for k in range(1, count + 1) if k not in border)
        length = max(1, int(skeleton(ink).sum()))
        rows.append((area, pieces, holes, area / length))
    return np.array(rows, dtype=np.float64)


# Candidate scores: larger means "less like a digit". Each is a function of a Scored set.
def _confidence(s: Scored) -> np.ndarray:
    return 1.0 - s.probs.max(axis=1)


def _entropy(s: Scored) -> np.ndarray:
    p = np.clip(s.probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def _rejector(s: Scored) -> np.ndarray:
    return np.nan_to_num(s.scores, nan=0.0)


class InkRange:
    """Ink evidence as a score: how far outside the range of validation digits each of the
    ink features falls, in units of that range's spread (0 inside it)."""

    def __init__(self, digits: np.ndarray) -> None:
        feats = ink_features(digits)
        self.lo, self.hi = np.quantile(feats, [0.001, 0.999], axis=0)
        self.spread = np.maximum(self.hi - self.lo, 1e-6)

    def __call__(self, s: Scored) -> np.ndarray:
        feats = ink_features(s.batch)
        out = np.maximum(self.lo - feats, 0) + np.maximum(feats - self.hi, 0)
        return (out / self.spread).max(axis=1)


def curve(
    name: str,
    scorer: Callable[[Scored], np.ndarray],
    digits: list[Scored],
    others: Scored,
) -> list[str]:
    """Rows (threshold, non-digits caught, digits refused) for one candidate rule alone:
    an image is caught or refused when the pre-processing refuses it or its score is over
    the threshold. Thresholds sit at the digits' upper quantiles, where a 0.5 % budget is
    spent; digits refused are pooled over the sets and given for the worst set."""
    d_scores = [scorer(d) for d in digits]
    o_score = scorer(others)
    pooled = np.concatenate([x[~d.refused] for x, d in zip(d_scores, digits, strict=True)])
    look = np.array([_is_lookalike(lbl) for lbl in others.labels])
    n_all = sum(len(d) for d in digits)
    rows = []
    for t in np.unique(np.quantile(pooled, QUANTILES)):
        d_rate = [
            float(np.mean(d.refused | (x > t))) for d, x in zip(digits, d_scores, strict=True)
        ]
        caught = others.refused | (o_score > t)
        pooled_rate = sum(r * len(d) for r, d in zip(d_rate, digits, strict=True)) / n_all
        worst = int(np.argmax(d_rate))
        rows.append(
            f"| {name} | {t:.4g} | {100 * caught[~look].mean():.1f} % | "
            f"{100 * caught.mean():.1f} % | {100 * pooled_rate:.2f} % | "
            f"{100 * d_rate[worst]:.2f} % ({digits[worst].name}) |"
        )
    return rows


def combined(
    digits: list[Scored], others: Scored, flags: Sequence[float], threshold: float
) -> list[str]:
    """The model's rejector at its own threshold together with the low-confidence flag at
    each of ``flags``: non-digits refused or flagged against digits refused or flagged."""
    look = np.array([_is_lookalike(lbl) for lbl in others.labels])
    rows = []
    for flag in flags:
        caught = outcome(others, flag, threshold)["any"]
        rates = [float(outcome(d, flag, threshold)["any"].mean()) for d in digits]
        worst = int(np.argmax(rates))
        rows.append(
            f"| {flag:g} | {100 * caught[~look].mean():.1f} % | {100 * caught.mean():.1f} % | "
            f"{100 * rates[worst]:.2f} % ({digits[worst].name}) |"
        )
    return rows


def tradeoff(digits: list[Scored], others: Scored, flags: Sequence[float], own: float) -> list[str]:
    """The policy's two rates together: for rejector thresholds at the digits' upper
    quantiles (and its own, ``own``) and each low-confidence flag, non-digits refused or
    flagged against digits refused or flagged (pooled over the sets, and the worst set)."""
    if np.isnan(np.concatenate([d.scores for d in digits])).all():
        return []
    pooled = np.concatenate([np.nan_to_num(d.scores[~d.refused]) for d in digits])
    thresholds = sorted({*np.quantile(pooled, TRADEOFF_QUANTILES).tolist(), own})
    look = np.array([_is_lookalike(lbl) for lbl in others.labels])
    n_all = sum(len(d) for d in digits)
    rows = []
    for t in thresholds:
        for flag in flags:
            caught = outcome(others, flag, t)["any"]
            rates = [float(outcome(d, flag, t)["any"].mean()) for d in digits]
            pooled_rate = sum(r * len(d) for r, d in zip(rates, digits, strict=True)) / n_all
            worst = int(np.argmax(rates))
            mark = " (own)" if t == own else ""
            rows.append(
                f"| {t:.4f}{mark} | {flag:g} | {100 * caught[~look].mean():.1f} % | "
                f"{100 * caught.mean():.1f} % | {100 * pooled_rate:.2f} % | "
                f"{100 * rates[worst]:.2f} % ({digits[worst].name}) |"
            )
    return rows


def _is_lookalike(label: str) -> bool:
    category, _, what = str(label).partition(":")
    return category in ("printed", "drawn") and what in nondigits.LOOKALIKES


# --------------------------------------------------------------------------- report


def _pct(mask: np.ndarray) -> str:
    return f"{100 * mask.mean():.2f} %" if mask.size else "–"


def right_and_confidently_wrong(
    s: Scored, low_confidence: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the digits answered right (a refusal, by pre-processing or the rejector, is a
    miss) and of those answered wrong with no low-confidence flag: what a user is misled by."""
    o = outcome(s, low_confidence, threshold)
    answered = ~o["pre"] & ~o["rejector"]
    top = s.probs.argmax(axis=1)
    labels = s.labels.astype(np.int64)
    return answered & (top == labels), answered & ~o["flagged"] & (top != labels)


def digit_table(digits: list[Scored], low_confidence: float, threshold: float) -> list[str]:
    lines = [
        "| digits | images | right | confidently wrong | refused (pre-processing) | "
        "refused (rejector) | flagged low confidence | refused or flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in digits:
        o = outcome(d, low_confidence, threshold)
        right, misled = right_and_confidently_wrong(d, low_confidence, threshold)
        lines.append(
            f"| {d.name} | {len(d)} | {_pct(right)} | {_pct(misled)} | {_pct(o['pre'])} | "
            f"{_pct(o['rejector'])} | {_pct(o['flagged'])} | **{_pct(o['any'])}** |"
        )
    return lines


def nondigit_table(others: Scored, low_confidence: float, threshold: float) -> list[str]:
    o = outcome(others, low_confidence, threshold)
    cats = np.array([str(x).partition(":")[0] for x in others.labels])
    look = np.array([_is_lookalike(x) for x in others.labels])
    lines = [
        "| non-digits | images | refused (pre-processing) | refused (rejector) | flagged "
        "low confidence | refused or flagged |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, mask: np.ndarray) -> str:
        return (
            f"| {name} | {int(mask.sum())} | {_pct(o['pre'][mask])} | "
            f"{_pct(o['rejector'][mask])} | {_pct(o['flagged'][mask])} | "
            f"**{_pct(o['any'][mask])}** |"
        )

    for cat in nondigits.CATEGORIES:
        lines.append(row(cat, (cats == cat) & ~look))
    for cat in ("printed", "drawn"):
        lines.append(row(f"{cat}, digit lookalikes", (cats == cat) & look))
    lines.append(row("**all, without lookalikes**", ~look))
    lines.append(row("**all, lookalikes included**", np.ones(len(others), dtype=bool)))
    return lines


def letter_table(others: Scored, low_confidence: float, threshold: float) -> list[str]:
    o = outcome(others, low_confidence, threshold)["any"]
    cats = np.array([str(x).partition(":")[0] for x in others.labels])
    letters = np.array([str(x).partition(":")[2] for x in others.labels])
    lines = ["| letter | twin of | printed | drawn |", "|---|---|---:|---:|"]
    order = sorted(nondigits.LOOKALIKES) + [
        c for c in nondigits.LETTERS if c not in nondigits.LOOKALIKES
    ]
    for ch in order:
        twin = nondigits.LOOKALIKES.get(ch, "")
        cells = []
        for cat in ("printed", "drawn"):
            mask = (cats == cat) & (letters == ch)
            cells.append(f"{int(o[mask].sum())}/{int(mask.sum())}")
        if cells != ["0/0", "0/0"]:
            lines.append(f"| {ch} | {twin} | {cells[0]} | {cells[1]} |")
    return lines


def build_sets(
    model: DigitModel, x: np.ndarray, y: np.ndarray, fonts: str, args: argparse.Namespace
) -> tuple[list[Scored], Scored, Scored]:
    n = args.digits_per_variant
    clean = [VARIANTS["clean"](d, i) for i, d in enumerate(x)]
    digits = [score(model, "MNIST (clean PNG)", clean, y)]
    for name, build in VARIANTS.items():
        if name != "clean":
            digits.append(score(model, name, [build(d, i) for i, d in enumerate(x[:n])], y[:n]))
    samples = nondigits.build(fonts, per_category=args.per_category, seed=args.nondigit_seed)
    labels = [f"{s.category}:{s.label}" for s in samples]
    others = score(model, "non-digits", [s.data for s in samples], labels)
    g_images, g_labels = nondigits.digit_glyphs(fonts, args.glyph_digits, args.nondigit_seed)
    glyphs = score(model, f"printed/drawn digits ({fonts} fonts)", g_images, g_labels)
    return digits, others, glyphs


def save_sets(path: str, sets: list[Scored], model_id: str = "") -> None:
    """The sets and the id of the model that answered them (:func:`model_id`)."""
    arrays: dict[str, Any] = {}  # Any: mypy would match np.ndarray against allow_pickle too
    for i, s in enumerate(sets):
        arrays |= {f"{i}_name": np.array(s.name), f"{i}_refused": s.refused, f"{i}_batch": s.batch}
        arrays |= {f"{i}_probs": s.probs, f"{i}_scores": s.scores, f"{i}_labels": s.labels}
    np.savez_compressed(path, count=np.int64(len(sets)), model=np.array(model_id), **arrays)


def load_sets(path: str) -> tuple[list[Scored], Scored, Scored, str]:
    """What :func:`save_sets` wrote: the digit sets, the non-digits, the glyph digits, and
    the id of the model that answered them ("" in files written before it was kept)."""
    with np.load(path, allow_pickle=False) as z:
        sets = [
            Scored(
                str(z[f"{i}_name"]),
                *(z[f"{i}_{k}"] for k in ("refused", "batch", "probs", "scores", "labels")),
            )
            for i in range(int(z["count"]))
        ]
        answered_by = str(z["model"]) if "model" in z.files else ""
    return sets[:-2], sets[-2], sets[-1], answered_by


def model_id(loaded: Any) -> str:
    """What tells one logged model from another: its MLmodel ``model_uuid`` (a URI like
    ``models:/digits/Production`` names different models over time)."""
    metadata = getattr(loaded, "metadata", None)
    return str(getattr(metadata, "model_uuid", "") or "")


def answered(sets: Sequence[Scored], model: DigitModel) -> list[Scored]:
    """The same images (the cached pre-processed batches and refusals) answered by ``model``
    and scored by its rejector: two networks compared on the very same images, paired,
    without rendering them again. Pre-processing is the shared one, so the batches are what
    this model would have made of the same pictures."""
    out = []
    for s in sets:
        probs = model.probabilities(s.batch)
        probs[s.refused] = 0.1
        scores = np.full(len(s), np.nan)
        rejector = getattr(model, "rejector", None)
        if rejector is not None and len(s):
            scores = rejector.scores(s.batch, probs).astype(np.float64)
            scores[s.refused] = np.nan
        out.append(Scored(s.name, s.refused, s.batch, probs, scores, s.labels))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--data-path", default="")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument(
        "--digits-per-variant",
        type=int,
        default=1000,
        help="digits built into each client variant (the clean MNIST set is always whole)",
    )
    parser.add_argument(
        "--per-category",
        type=int,
        default=572,
        help="non-digits per category (52 letters × 11 fonts)",
    )
    parser.add_argument("--glyph-digits", type=int, default=440)
    parser.add_argument(
        "--nondigit-seed",
        type=int,
        default=100,
        help="draw of the non-digit set; the rejector is fitted on draws 0-5 of the fitting fonts "
        "(and on kinds of drawn letters and scribbles this set never holds)",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="the rejector's threshold (default: its own)"
    )
    parser.add_argument(
        "--rejector",
        default="",
        help="a rejector to use instead of the model's, with its own threshold: an .npz "
        "(pyfunc.reject) or another model version's (models:/digits/2); cached sets are "
        "scored again with it",
    )
    parser.add_argument("--low-confidence", type=float, default=0.5)
    parser.add_argument("--curves", action="store_true", help="also print the candidates' curves")
    parser.add_argument(
        "--cache",
        default="",
        help="an .npz of the built and scored sets: read if it exists, else written; "
        "read with another model, its images are answered again by that one (the same "
        "images for every model compared)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        data = load_mnist(args.data_path or None)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loaded = mlflow.pyfunc.load_model(args.model_uri)
    model, this_model = loaded.unwrap_python_model(), model_id(loaded)
    if args.rejector:
        model.rejector = other_rejector(args.rejector)
    n_val = validation_size(len(data.x_train), VALIDATION_SPLIT)
    if args.split == "test":
        x, y = data.x_test, data.y_test
    else:
        x, y = data.x_train[-n_val:], data.y_train[-n_val:]
    fonts = SPLITS[args.split]
    if args.cache and Path(args.cache).is_file():
        digits, others, glyphs, answered_by = load_sets(args.cache)
        if answered_by != this_model or not this_model:
            # Another model's answers are in the file: keep its images, answer them again.
            print(f"(the cached images answered again by {args.model_uri})")
            *digits, others, glyphs = answered([*digits, others, glyphs], model)
        elif args.rejector:
            *digits, others, glyphs = rescored([*digits, others, glyphs], model.rejector)
    else:
        digits, others, glyphs = build_sets(model, x, y, fonts, args)
        if args.cache:
            save_sets(args.cache, [*digits, others, glyphs], this_model)

    rejector = getattr(model, "rejector", None)
    threshold = rejector.threshold if rejector is not None else np.inf
    if args.threshold is not None:
        threshold = args.threshold
    source = f" with the rejector of {args.rejector}" if args.rejector else ""
    print(f"# Rejection: {args.model_uri}{source}, {args.split} digits, {fonts} fonts")
    print(
        f"\nrejector: {f'threshold {threshold:.4f}' if rejector else 'none'}; "
        f"low confidence below {args.low_confidence}\n"
    )
    print("\n".join(nondigit_table(others, args.low_confidence, threshold)))
    print()
    print("\n".join(digit_table([*digits, glyphs], args.low_confidence, threshold)))
    print("\n(the printed/drawn digits row is reported, not part of the digit target)\n")
    print("\n".join(letter_table(others, args.low_confidence, threshold)))
    if args.curves:
        candidates: dict[str, Callable[[Scored], np.ndarray]] = {
            "1 - confidence": _confidence,
            "entropy": _entropy,
            # Fitted on the validation digits whatever the split measured.
            "ink range": InkRange(pre_process(data.x_train[-n_val:])),
        }
        if rejector is not None:
            candidates["rejector"] = _rejector
        print(
            "\n| rule (alone) | threshold | non-digits caught (no lookalikes) | caught (all) | "
            "digits refused (pooled) | worst set |"
        )
        print("|---|---:|---:|---:|---:|---|")
        for name, scorer in candidates.items():
            print("\n".join(curve(name, scorer, digits, others)))
        if rejector is not None:
            print(
                "\n| low-confidence flag below | non-digits refused or flagged (no lookalikes) "
                "| (all) | digits refused or flagged, worst set |"
            )
            print("|---:|---:|---:|---|")
            print("\n".join(combined(digits, others, FLAGS, threshold)))
            print(
                "\n| rejector threshold | flag below | non-digits refused or flagged (no "
                "lookalikes) | (all) | digits refused or flagged, pooled | worst set |"
            )
            print("|---:|---:|---:|---:|---:|---|")
            print("\n".join(tradeoff(digits, others, TRADEOFF_FLAGS, threshold)))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
