"""Schemathesis against the live server: every operation in /openapi.json, generated
requests (valid and invalid, single calls and recognise → feedback sequences), every
answer checked against the document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

# Not positive_data_acceptance: a schema-valid /recognize body (any base64 string, any
# bytes) is rarely a decodable image, so 4xx answers to "valid" data are right here.
# Not the resource checks (use_after_free, …): the API creates no deletable resources.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
]


def test_schemathesis_finds_no_failures(live_server: str, tmp_path: Path):
    # The CLI rather than the pytest plugin: its lazy-fixture loader does not work with
    # pytest 9.2 (it reads the removed Node._nodeid), and the CLI runs every phase
    # (examples, coverage, fuzzing, stateful) with one bounded, reproducible budget.
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live_server}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        "60",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    # cwd: its own directory, so no stray schemathesis.toml is picked up and nothing is
    # written into the project.
    proc = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"schemathesis exited {proc.returncode}\n{output[-12000:]}"
    assert "No issues found" in output or " passed" in output, output[-4000:]


def test_document_describes_the_served_routes(live_server: str):
    doc = requests.get(f"{live_server}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/recognize", "/feedback", "/health", "/ready", "/metrics", "/docs", "/"):
        assert path in doc["paths"], path
    recognize = doc["paths"]["/recognize"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg"} <= set(recognize)


def test_docs_page_lists_every_operation(live_server: str):
    doc = requests.get(f"{live_server}/openapi.json", timeout=10).json()
    page = requests.get(f"{live_server}/docs", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    for path, operations in doc["paths"].items():
        for method in operations:
            assert f'id="op-{operations[method]["operationId"]}"' in page.text, (method, path)
