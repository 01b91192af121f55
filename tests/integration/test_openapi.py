"""Schemathesis against the live server: every operation in /openapi.json, generated
requests (valid and invalid, single calls and recognise → feedback sequences), every
answer checked against the document; and the docs page (Swagger UI) in a real browser."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

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


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium, as in test_web_page.py (.ci/run installs it)."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_docs_page_shows_every_operation_with_curl_examples(live_server: str, browser: WebDriver):
    doc = requests.get(f"{live_server}/openapi.json", timeout=10).json()
    # Deep link: Swagger UI opens the /recognize operation.
    browser.get(f"{live_server}/docs#/recognition/recognize")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "swagger-ui").get_attribute("data-ready") == "true"
    )
    shown = {
        (block.get_attribute("id") or "").rsplit("-", 1)[-1]
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock[id^='operations-']")
    }
    documented = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert shown == documented
    recognize = browser.find_element(By.ID, "operations-recognition-recognize")
    WebDriverWait(browser, 10).until(lambda _: "curl -s" in recognize.text)
    assert "--data-binary @examples/seven.png" in recognize.text
    # Nothing but this service was asked for anything.
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {live_server}, origins
