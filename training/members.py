"""Register one network of a registered ensemble (``members`` > 1) as a version of its own.

An ensemble version averages its members' probabilities in one graph
(:func:`training.network.ensemble`); member 0 is exactly the network that the same run with
``members=1`` trains. Registering it alone, with a rejector fitted for it, gives the single
network and the ensemble as two versions compared on the very same images
(``python -m training.rejection … --cache``) without training the single network again::

    python -m training.members --model-uri models:/digits/4 --member 0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def members_of(model: keras.Model) -> list[keras.Model]:
    """The member networks of an ensemble built by :func:`training.network.ensemble`, in
    order; a single network is its own one member."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested or [model]


def single(member: keras.Model, name: str) -> keras.Model:
    """A member as a model of its own (its own input), as a single-network run saves it."""
    import keras
    import numpy as np

    network = keras.Model(member.input, member.output, name=name)
    # Keras exports (ONNX) only a model that has been called once.
    network(np.zeros((1, *network.input_shape[1:]), dtype="float32"))
    return network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-uri", required=True, help="an ensemble version")
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--model-name", default="digits", help="registered name of the copy")
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument("--experiment-name", default="digits")
    args = parser.parse_args(argv)

    import keras
    import mlflow

    import training.network  # noqa: F401  registers the custom loss the saved model names
    from training import tracking
    from training.data import load_mnist, resolve_path
    from training.register import export_onnx, log_copy
    from training.rejector import source_family

    tracking.configure()
    example = load_mnist(resolve_path(args.data_path)).x_train[0]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=tmp))
        whole = keras.models.load_model(next((local / "artifacts").glob("*.keras")))
        members = members_of(whole)
        if not 0 <= args.member < len(members):
            raise SystemExit(f"{args.model_uri} has {len(members)} member(s)")
        family = source_family(local)
        network = single(members[args.member], family)
        out = Path(tmp) / "member"
        out.mkdir()
        keras_path = out / "mnist_cnn.keras"
        network.save(keras_path)
        onnx_path = export_onnx(network, out / "mnist_cnn.onnx")
        tracking.use_experiment(args.experiment_name)
        version = log_copy(
            keras_path,
            example,
            args.model_name,
            onnx_path,
            family,
            f"member-{args.member}",
            {"source_model": args.model_uri, "member": args.member},
        )
    print(f"registered {args.model_name} version {version} (member {args.member})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
