"""The peers' launch configurations (bench.peers) and their request encodings, without
installing or starting them (make bench does that; docs/performance.md has its figures)."""

from __future__ import annotations

import ast
import json
from importlib import metadata
from pathlib import Path

from bench import peers
from bench.payloads import Payload, answered_digit, request_for

PAYLOAD = Payload("png28", "a test image", b"\x89PNG fake", "image/png", 7)


def test_mlserver_defaults_set_only_the_listeners(tmp_path: Path) -> None:
    folder, files = peers.mlserver_files("mlserver", 8123, "models:/digits/Production", tmp_path)
    settings = json.loads((folder / "settings.json").read_text())
    model = json.loads((folder / "model-settings.json").read_text())
    assert settings["http_port"] == 8123
    assert len({settings["http_port"], settings["grpc_port"], settings["metrics_port"]}) == 3
    assert "parallel_workers" not in settings
    assert "max_batch_size" not in model and "max_batch_time" not in model
    assert model["name"] == "digits"
    assert model["parameters"] == {"uri": "models:/digits/Production", "content_type": "pd"}
    assert files == {"settings.json": settings, "model-settings.json": model}


def test_mlserver_tuned_has_workers_and_adaptive_batching(tmp_path: Path) -> None:
    folder, _ = peers.mlserver_files("mlserver-tuned", 8124, "models:/digits/1", tmp_path)
    settings = json.loads((folder / "settings.json").read_text())
    model = json.loads((folder / "model-settings.json").read_text())
    assert settings["parallel_workers"] == 2
    assert model["max_batch_size"] == 32
    assert model["max_batch_time"] == 0.005


def test_mlserver_runtime_is_importable_by_its_implementation_path(tmp_path: Path) -> None:
    folder, _ = peers.mlserver_files("mlserver", 8125, "models:/digits/Production", tmp_path)
    module, cls = json.loads((folder / "model-settings.json").read_text())["implementation"].rsplit(
        ".", 1
    )
    tree = ast.parse((folder / f"{module}.py").read_text())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert cls in classes


def test_bentoml_service_is_one_batchable_service(tmp_path: Path) -> None:
    folder, config = peers.bentoml_files(tmp_path)
    source = (folder / "service.py").read_text()
    tree = ast.parse(source)  # the template formats into valid Python
    assert [n.name for n in tree.body if isinstance(n, ast.ClassDef)] == ["Digits"]
    assert "batchable=True" in source
    assert f"max_batch_size={config['max_batch_size']}" in source
    assert f"workers={config['workers']}" in source
    assert config["service"] == "service:Digits"


def test_venvs_pin_the_model_packages_at_this_interpreter_versions() -> None:
    reqs = peers.requirements("mlserver")
    assert "uvloop<0.22" in reqs
    assert f"onnxruntime=={metadata.version('onnxruntime')}" in reqs
    assert f"mlflow=={metadata.version('mlflow')}" in reqs
    assert any(r.startswith("bentoml>=1.4") for r in peers.requirements("bentoml"))
    assert peers.venv_kind("mlserver-tuned") == peers.venv_kind("mlserver") == "mlserver"


def test_v2_request_and_answer() -> None:
    req = request_for("v2", PAYLOAD)
    assert req.path == "/v2/models/digits/infer"
    tensor = json.loads(req.body)["inputs"][0]
    assert tensor["datatype"] == "BYTES" and tensor["shape"] == [1]
    assert tensor["parameters"] == {"content_type": "str"}
    assert len(tensor["data"]) == 1
    answer = {"outputs": [{"name": "confidence", "data": [0.9]}, {"name": "digit", "data": [7]}]}
    assert answered_digit("v2", answer) == 7


def test_bentoml_request_and_answer() -> None:
    req = request_for("bentoml", PAYLOAD)
    assert req.path == "/predict"
    assert len(json.loads(req.body)["images"]) == 1
    assert answered_digit("bentoml", [{"digit": 3, "confidence": 0.8}]) == 3  # type: ignore[arg-type]
