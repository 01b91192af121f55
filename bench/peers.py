"""The servers a team would pick instead, each in a virtual environment of its own.

    python -m bench.peers --install          # create/refresh bench/.venvs/{mlserver,bentoml}
    python -m bench.run --servers service,mlserver,mlserver-tuned,bentoml,ceiling

* ``mlserver``: MLServer 1.7 with ``mlserver_mlflow.MLflowRuntime`` at its defaults (MLflow 3
  no longer has ``mlflow models serve --enable-mlserver``, so it runs as ``mlserver start``).
* ``mlserver-tuned``: the same, tuned as MLServer's docs recommend for CPU: parallel
  inference workers (one per core) and adaptive batching (``max_batch_size``,
  ``max_batch_time``).
* ``bentoml``: BentoML 1.4, one service (the model runs inside the API process; its
  two-service form loses requests under load, bentoml#5540) with adaptive batching.

Every peer serves the same registered model (``models:/digits/Production``) through
``mlflow.pyfunc.load_model``, so the pre-processing is the model's own (its ``code_paths``
carry ``pyfunc/``) and the network runs on ONNX Runtime, at the thread setting this service
uses (``inference_threads``, passed as the pyfunc's ``model_config``). Versions of the
model's own dependencies are those of this interpreter; the peer's own packages are pinned
below. The venvs live under ``bench/.venvs/`` (git-ignored) and are rebuilt when the pins
change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.payloads import PROJECT_ROOT

VENV_ROOT = PROJECT_ROOT / "bench" / ".venvs"
PEER_NAMES = ("mlserver", "mlserver-tuned", "bentoml")
MODEL_NAME = "digits"
# What the pyfunc imports when it loads (training.register.pip_requirements), at this
# interpreter's versions: the peers run exactly the model code this service runs.
MODEL_PACKAGES = ("mlflow", "numpy", "pillow", "scipy", "pandas", "onnxruntime", "scikit-learn")
# MLServer 1.7.1 breaks with uvloop 0.22 (its event-loop policy import).
PEER_PACKAGES = {
    "mlserver": ("mlserver>=1.7.1,<1.8", "mlserver-mlflow>=1.7.1,<1.8", "uvloop<0.22"),
    "bentoml": ("bentoml>=1.4.40,<1.5",),
}
# Tuned MLServer, as its docs recommend for CPU: one inference worker per core, and
# adaptive batching up to 32 requests or 5 ms (the measured setting).
TUNED_WORKERS = 2
MAX_BATCH_SIZE = 32
MAX_BATCH_TIME_S = 0.005
# BentoML: one service, two API worker processes (one per core), adaptive batching.
BENTO_WORKERS = 2
BENTO_MAX_BATCH_SIZE = 32
# BentoML's own default: a shorter limit makes it refuse requests as "overloaded" as soon
# as the machine is busy (50 ms did, here, at c=8).
BENTO_MAX_LATENCY_MS = 60_000


def venv_kind(name: str) -> str:
    """Which venv a peer runs in (both MLServer rows share one)."""
    return "mlserver" if name.startswith("mlserver") else name


def requirements(kind: str) -> list[str]:
    pins = [f"{pkg}=={metadata.version(pkg)}" for pkg in MODEL_PACKAGES]
    return [*PEER_PACKAGES[kind], *pins]


def venv_dir(kind: str, root: Path = VENV_ROOT) -> Path:
    return root / kind


def venv_python(kind: str, root: Path = VENV_ROOT) -> Path:
    return venv_dir(kind, root) / "bin" / "python"


def ensure_venv(kind: str, root: Path = VENV_ROOT, log: Path | None = None) -> Path:
    """The venv's python, created (or re-installed when the pins changed) first."""
    reqs = requirements(kind)
    stamp = venv_dir(kind, root) / "bench-requirements.json"
    wanted = json.dumps(reqs, indent=1)
    if venv_python(kind, root).exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv_python(kind, root)
    print(f"bench.peers: installing {kind} venv ({', '.join(PEER_PACKAGES[kind])})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir(kind, root))], check=True)
    out = open(log, "ab") if log else None  # noqa: SIM115 (closed below)
    try:
        subprocess.run(
            [str(venv_python(kind, root)), "-m", "pip", "install", "-q", *reqs],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
    finally:
        if out:
            out.close()
    stamp.write_text(wanted)
    return venv_python(kind, root)


def installed_versions(kind: str, root: Path = VENV_ROOT) -> dict[str, str]:
    """The versions that actually run (recorded in bench.json)."""
    names = [*(r.split(">")[0].split("<")[0].split("=")[0] for r in PEER_PACKAGES[kind])]
    names += ["onnxruntime", "mlflow"]
    code = (
        "import json, sys; from importlib import metadata as m; "
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    proc = subprocess.run(
        [str(venv_python(kind, root)), "-c", code, *names],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(proc.stdout))


def fingerprint(kind: str) -> str:
    return hashlib.sha256(json.dumps(requirements(kind)).encode()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--install", action="store_true", help="create or refresh the venvs")
    parser.add_argument("--kinds", default="mlserver,bentoml")
    args = parser.parse_args(argv)
    for kind in args.kinds.split(","):
        if args.install:
            ensure_venv(kind)
        if venv_python(kind).exists():
            print(kind, installed_versions(kind))
    return 0


# --------------------------------------------------------------------------- launch configs

# Loads the registered model as mlserver_mlflow.MLflowRuntime does, with the pyfunc's
# model_config giving ONNX Runtime the same thread count as this service's workers (the
# runtime has no setting for it). Written beside model-settings.json, where MLServer finds
# custom runtimes.
MLSERVER_RUNTIME = '''\
"""bench.peers: mlserver_mlflow's runtime, the model loaded with a thread setting."""

import json
import os

import mlflow.pyfunc
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceResponse
from mlserver.utils import get_model_uri
from mlserver_mlflow import MLflowRuntime

THREADS = int(os.environ.get("DIGITS_INFERENCE_THREADS", "1"))


class DigitsRuntime(MLflowRuntime):
    async def load(self) -> bool:
        # MLflowRuntime.load, plus model_config; and its metadata sync only for a signature
        # with inputs (1.7.1 fails on an outputs-only signature, as this model has).
        uri = await get_model_uri(self._settings)
        self._model = mlflow.pyfunc.load_model(uri, model_config={"inference_threads": THREADS})
        self._input_schema = self._model.metadata.get_input_schema()
        self._signature = self._model.metadata.signature
        if self._signature is not None and self._signature.inputs is not None:
            self._sync_metadata()
        return True

    async def predict(self, payload):
        answers = self._model.predict(self.decode_request(payload))
        # MLServer's pandas codec cannot encode this answer (columns of lists, of None, of
        # text): the digit goes as INT64 (-1: none), every other column as JSON text.
        digits = answers["digit"].fillna(-1).astype("int64").to_numpy()
        outputs = [NumpyCodec.encode_output("digit", digits)]
        for column in answers.columns.drop("digit"):
            text = [json.dumps(v, default=_plain) for v in answers[column]]
            outputs.append(StringCodec.encode_output(column, text))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)
'''

# BentoML's one-service form: the model runs in each API worker, requests are batched
# adaptively (batchable API, up to max_batch_size or max_latency_ms).
BENTO_SERVICE = '''\
"""bench.peers: the registered model as one BentoML service with adaptive batching."""

import json
import os

import bentoml
import mlflow.pyfunc
import pandas as pd

MODEL_URI = os.environ["DIGITS_MODEL_URI"]
THREADS = int(os.environ.get("DIGITS_INFERENCE_THREADS", "1"))


@bentoml.service(workers={workers}, traffic={{"timeout": 60}})
class Digits:
    def __init__(self) -> None:
        self.model = mlflow.pyfunc.load_model(
            MODEL_URI, model_config={{"inference_threads": THREADS}}
        )

    @bentoml.api(batchable=True, max_batch_size={max_batch_size}, max_latency_ms={max_latency_ms})
    def predict(self, images: list[str]) -> list[dict]:
        answers = self.model.predict(pd.DataFrame({{"image": images}}))
        return json.loads(answers.to_json(orient="records"))
'''


def mlserver_files(name: str, port: int, model_uri: str, work: Path) -> tuple[Path, dict]:
    """The folder ``mlserver start`` is given (settings.json, model-settings.json and the
    runtime), and the settings written, for bench.json."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "http_port": port,
        # Free ports for the listeners a benchmark does not use (they must not collide).
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "debug": False,
    }
    model: dict[str, object] = {
        "name": MODEL_NAME,
        "implementation": "digits_runtime.DigitsRuntime",
        # Decode a request as a DataFrame (the pyfunc's input: an "image" column of base64
        # strings); without an input signature the runtime would pass a dict of arrays.
        "parameters": {"uri": model_uri, "content_type": "pd"},
    }
    if name == "mlserver-tuned":
        settings["parallel_workers"] = TUNED_WORKERS
        model["max_batch_size"] = MAX_BATCH_SIZE
        model["max_batch_time"] = MAX_BATCH_TIME_S
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    (folder / "model-settings.json").write_text(json.dumps(model, indent=1))
    (folder / "digits_runtime.py").write_text(MLSERVER_RUNTIME)
    return folder, {"settings.json": settings, "model-settings.json": model}


def bentoml_files(work: Path) -> tuple[Path, dict]:
    folder = work / "bentoml"
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "workers": BENTO_WORKERS,
        "max_batch_size": BENTO_MAX_BATCH_SIZE,
        "max_latency_ms": BENTO_MAX_LATENCY_MS,
    }
    (folder / "service.py").write_text(BENTO_SERVICE.format(**config))
    return folder, {"service": "service:Digits", **config}


def make_spec(name: str, port: int, model_uri: str, env: dict[str, str], work: Path, threads: int):
    """A bench.servers.ServerSpec for peer ``name`` (its venv must exist: ensure_venv)."""
    from bench import servers

    kind = venv_kind(name)
    python = venv_python(kind)
    bin_dir = python.parent
    peer_env = {
        **env,
        # The venv's own tools first; none of this project's packages on the path: the
        # model's code_paths carry pyfunc/ (that is the test of its packaging too).
        "PATH": f"{bin_dir}:{env.get('PATH', '')}",
        "PYTHONPATH": "",
        "VIRTUAL_ENV": str(python.parent.parent),
        "DIGITS_MODEL_URI": model_uri,
        "DIGITS_INFERENCE_THREADS": str(threads),
        "BENTOML_HOME": str(work / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    config: dict[str, object] = {
        "venv": str(venv_dir(kind)),
        "versions": installed_versions(kind),
        "inference_threads": threads,
        "model_uri": model_uri,
    }
    if kind == "mlserver":
        folder, files = mlserver_files(name, port, model_uri, work)
        peer_env["PYTHONPATH"] = str(folder)
        tuned = name == "mlserver-tuned"
        label = (
            f"MLServer + mlserver-mlflow, {TUNED_WORKERS} parallel workers, adaptive batching "
            f"{MAX_BATCH_SIZE}/{MAX_BATCH_TIME_S * 1000:g} ms"
            if tuned
            else "MLServer + mlserver-mlflow, defaults"
        )
        return servers.ServerSpec(
            name=name,
            label=f"{label}, ORT {threads} thread(s)",
            api="v2",
            argv=[str(bin_dir / "mlserver"), "start", str(folder)],
            env=peer_env,
            ready_path=f"/v2/models/{MODEL_NAME}/ready",
            port=port,
            cwd=folder,
            config={**config, **files},
            workers=TUNED_WORKERS if tuned else 1,
        )
    folder, files = bentoml_files(work)
    return servers.ServerSpec(
        name=name,
        label=f"BentoML, one service, {BENTO_WORKERS} workers, adaptive batching, "
        f"ORT {threads} thread(s)",
        api="bentoml",
        argv=[
            *(str(bin_dir / "bentoml"), "serve", "service:Digits"),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        env=peer_env,
        ready_path="/readyz",
        port=port,
        cwd=folder,
        config={**config, **files},
        workers=BENTO_WORKERS,
    )


def _free_port() -> int:
    from bench import servers

    return servers.free_port()


if __name__ == "__main__":
    sys.exit(main())
