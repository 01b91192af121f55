"""The no-digit rejector inside the network's ONNX graph: one ONNX Runtime call per pass.

:func:`scored_graph` appends a fitted :class:`~pyfunc.reject.Rejector` to a network's ONNX
graph, so that one session call gives both the network's probabilities and the rejector's
P(no digit) (``pyfunc.reject.SCORE_OUTPUT``): the image goes through the rejector's
convolutions, the network's probabilities are ranked by ``TopK`` (k = 10, in decreasing
order, as :func:`pyfunc.reject.ranked`), and the dense layers and the logistic output follow.
The numbers are those of the numpy rejector up to float32 rounding (tests/pyfunc/test_reject.py).

It is written when a version is logged (``training.register``), beside the network's own
ONNX file and the ``.npz`` rejector, which stay: versions logged before it have no such
artifact and keep the numpy rejector, and a service of before ignores the new artifact.
Only training needs ``onnx``; the pyfunc runs the graph with ONNX Runtime alone.

``python -m training.rejector_onnx --model-uri models:/digits/Production`` registers a copy
of a version that has a rejector and ONNX weights, with the graph added (nothing re-fitted).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pyfunc.reject import SCORE_OUTPUT, Rejector

__all__ = ["rejector_nodes", "scored_graph", "write_scored_graph"]

PREFIX = "rejector/"
# TopK with k as an input and the largest/sorted attributes.
MIN_OPSET = 11


def rejector_nodes(
    rejector: Rejector, image: str, probs: str, out: str = SCORE_OUTPUT
) -> tuple[list[Any], list[Any]]:
    """The rejector as ONNX nodes and initializers: ``image`` (a ``(N, 28, 28, 1)`` float32
    tensor of the graph) and ``probs`` (``(N, 10)`` float32) in, ``out`` (``(N, 1)``
    float32, P(no digit)) out. Every name it adds starts with :data:`PREFIX`."""
    from onnx import helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, PREFIX + name))
        return PREFIX + name

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [PREFIX + name], name=PREFIX + name, **attrs))
        return PREFIX + name

    # NHWC with one channel is NCHW already: a reshape, not a transpose.
    h = node("Reshape", [image, const("nchw_shape", np.array([-1, 1, 28, 28], np.int64))], "nchw")
    channels, side = 1, 28
    for i, (kernel, bias) in enumerate(rejector.convs):
        # Keras (kh, kw, in, out) → ONNX (out, in, kh, kw); 'valid', stride 1.
        w = np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)), dtype=np.float32)
        h = node("Conv", [h, const(f"conv{i}_w", w), const(f"conv{i}_b", bias)], f"conv{i}")
        h = node("Relu", [h], f"relu{i}")
        # Keras MaxPooling2D(2): floor mode, an odd last row/column dropped.
        h = node("MaxPool", [h], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
        channels, side = kernel.shape[3], (side - kernel.shape[0] + 1) // 2
    flat = node("Flatten", [h], "flat", axis=1)  # (c, h, w) order; Keras flattens (h, w, c)
    nodes.append(
        helper.make_node(
            "TopK",
            [probs, const("k10", np.array([10], np.int64))],
            [PREFIX + "ranked", PREFIX + "ranked_index"],
            name=PREFIX + "ranked",
            axis=1,
            largest=1,
            sorted=1,
        )
    )
    h = node("Concat", [flat, PREFIX + "ranked"], "features", axis=1)
    for i, (w, b) in enumerate(rejector.dense):
        w = np.asarray(w, np.float32)
        if i == 0:  # its rows for the image features, reordered to the graph's flattening
            n = channels * side * side
            image_rows = w[:n].reshape(side, side, channels, -1).transpose(2, 0, 1, 3)
            w = np.concatenate([image_rows.reshape(n, -1), w[n:]])
        h = node(
            "Gemm",
            [h, const(f"dense{i}_w", np.ascontiguousarray(w)), const(f"dense{i}_b", b)],
            f"dense{i}",
        )
        if i < len(rejector.dense) - 1:
            h = node("Relu", [h], f"dense{i}_relu")
    nodes.append(helper.make_node("Sigmoid", [h], [out], name=PREFIX + "sigmoid"))
    return nodes, inits


def scored_graph(network: Any, rejector: Rejector) -> Any:
    """``network`` (an ``onnx.ModelProto`` taking ``(N, 28, 28, 1)`` and giving ``(N, 10)``
    probabilities first) with ``rejector`` appended: outputs the probabilities, then
    :data:`~pyfunc.reject.SCORE_OUTPUT`."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(network)
    graph = model.graph
    opset = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset.version < MIN_OPSET:
        raise ValueError(f"the network's ONNX opset is below {MIN_OPSET}: {opset}")
    initialized = {i.name for i in graph.initializer}
    image = next(i.name for i in graph.input if i.name not in initialized)
    probs = graph.output[0].name
    nodes, inits = rejector_nodes(rejector, image, probs)
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    n: str | int = batch.dim_param or (batch.dim_value if batch.HasField("dim_value") else "N")
    graph.output.append(helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, [n, 1]))
    onnx.checker.check_model(model)
    return model


def write_scored_graph(network_path: str | Path, rejector: Rejector, path: str | Path) -> Path:
    """:func:`scored_graph` of the ONNX file ``network_path``, written to ``path``."""
    import onnx

    onnx.save(scored_graph(onnx.load(str(network_path)), rejector), str(path))
    return Path(path)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--model-name", default="digits", help="registered name of the copy")
    parser.add_argument("--experiment-name", default="digits")
    args = parser.parse_args(argv)

    import mlflow

    from pyfunc.model import KERAS_ARTIFACT, ONNX_ARTIFACT, DigitModel
    from pyfunc.reject import REJECT_ARTIFACT, SCORED_ARTIFACT
    from training import tracking
    from training.register import log_family, pip_requirements
    from training.rejector import artifact_paths, source_family

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=tmp))
        paths = artifact_paths(local)
        for name in (KERAS_ARTIFACT, ONNX_ARTIFACT, REJECT_ARTIFACT):
            if name not in paths:
                raise SystemExit(f"{args.model_uri} has no {name} artifact")
        family = source_family(local)
        example = _example_digit(local)
        tracking.use_experiment(args.experiment_name)
        with mlflow.start_run(run_name="add-rejector-graph"):
            mlflow.log_params({"source_model": args.model_uri})
            mlflow.set_tag("family", family)
            info = log_family(
                DigitModel(family=family),
                # log_family writes the scored graph beside the ONNX network.
                {k: str(v) for k, v in paths.items() if k != SCORED_ARTIFACT},
                example,
                args.model_name,
                pip_requirements(with_onnx=True),
            )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_model_version_tag(args.model_name, version, "family", family)
    print(f"registered {args.model_name} version {version}")
    return 0


def _example_digit(model_dir: Path) -> np.ndarray:
    """The source version's input example as a 28×28 digit (any digit would do)."""
    import base64
    import io
    import json

    from PIL import Image

    example = json.loads((model_dir / "input_example.json").read_text())
    image = example["data"][0][0] if "data" in example else example["image"][0]
    with Image.open(io.BytesIO(base64.b64decode(image))) as img:
        return np.asarray(img.convert("L"))


if __name__ == "__main__":
    sys.exit(main())
