"""``python -m training.photos_report``: what the photo variants cost and how a model does on them.

Two reports, printed as Markdown:

- ``timing``: per-image pre-processing cost (decode to 28×28) for a few kinds of upload:
  a 28×28 PNG, a 640×480 paper photo, and the variants. CPU time of this process (not wall
  time), the median over images of the fastest of ``--repeats`` runs, so a busy machine
  changes the figures less.
- ``accuracy``: per variant, the share answered right and the share answered wrongly with
  confidence ≥ 0.5 (what the service does not flag), on validation or test digits, plus the
  model's MNIST accuracy on that split. The same table as ``make eval-wild`` without the
  naive baseline and without an MLflow run, for comparing models (or pre-processing
  versions, by ``PYTHONPATH``) on the same images.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

import numpy as np
from PIL import Image

from pyfunc.errors import ImageError
from pyfunc.preprocess import pre_process
from training.data import VALIDATION_SPLIT, load_mnist
from training.variants import VARIANTS, encode, paper_jpeg


def photo640(digit: np.ndarray, seed: int) -> bytes:
    """The paper JPEG enlarged to a 640×480 photo: a clean photo with nothing but a digit."""
    with Image.open(io.BytesIO(paper_jpeg(digit, seed))) as img:
        return encode(img.resize((640, 480)), "JPEG", quality=85)


TIMED = {"png28": VARIANTS["clean"], "photo640": photo640}


def _cpu_ms(data: bytes, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        with contextlib.suppress(ImageError):
            pre_process([data])
        best = min(best, time.process_time() - start)
    return 1000 * best


def timing(x: np.ndarray, names: list[str], images: int, repeats: int) -> str:
    builders = {**TIMED, **{n: VARIANTS[n] for n in names if n not in TIMED}}
    lines = ["| upload | images | median CPU ms | 90th percentile ms |", "|---|--:|--:|--:|"]
    for name, build in builders.items():
        costs = [_cpu_ms(build(x[i], i), repeats) for i in range(images)]
        lines.append(
            f"| {name} | {images} | {np.median(costs):.2f} | {np.percentile(costs, 90):.2f} |"
        )
    return "\n".join(lines)


def accuracy(model_uri: str, x: np.ndarray, y: np.ndarray, names: list[str], n: int) -> str:
    import mlflow

    from training.wild import build_sets, pipeline_scores

    model = mlflow.pyfunc.load_model(model_uri)
    mnist = float(np.mean(model.predict({"image": x})["digit"].to_numpy() == y))
    lines = [
        f"MNIST: {100 * mnist:.2f} % of {len(y)}",
        "",
        "| variant | images | right | confidently wrong |",
        "|---|--:|--:|--:|",
    ]
    digits = model.unwrap_python_model()
    for name, encoded in build_sets(x[:n], names).items():
        right, wrong = pipeline_scores(digits, encoded, y[:n])
        lines.append(f"| {name} | {n} | {100 * right:.2f} % | {100 * wrong:.2f} % |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", choices=("timing", "accuracy"))
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--data-path", default="")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--variants", default="", help="comma-separated; default all")
    parser.add_argument("--limit", type=int, default=200, help="digits per variant")
    parser.add_argument("--repeats", type=int, default=3, help="timing: runs per image")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from training.evaluate import held_out

    args = parse_args(argv)
    names = [n for n in args.variants.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        print(f"error: unknown variants {unknown}; known: {sorted(VARIANTS)}", file=sys.stderr)
        return 2
    x, y = held_out(load_mnist(args.data_path), args.split, VALIDATION_SPLIT)
    print(f"{args.split} digits, {time.strftime('%Y-%m-%d')}")
    if args.report == "timing":
        print(timing(x, names, args.limit, args.repeats))
    else:
        print(accuracy(args.model_uri, x, y, names, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
