"""The page and /docs work in headless Chromium under the service's Content-Security-Policy
(no inline script or style allowed): an upload is recognised with its preview shown, Swagger
UI renders the document, and the browser reports no policy violation."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests import tiny_model
from tests.support import PROJECT_ROOT, Registry, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,900",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_and_docs_work_under_the_policy(tmp_path: Path, tiny_onnx, browser):
    reg = Registry.create(tmp_path / "registry")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    with start_server(reg.env, {"WORKERS": "1"}, log_dir=tmp_path) as url:
        policy = requests.get(f"{url}/", timeout=10).headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy

        browser.get(f"{url}/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "main").get_attribute("data-ready") == "true")
        upload = browser.find_element(By.ID, "upload")
        upload.send_keys(str(PROJECT_ROOT / "examples" / "seven.png"))
        wait.until(lambda d: d.find_element(By.ID, "result").is_displayed())
        assert browser.find_element(By.ID, "digit").text == "7"
        preview = browser.find_element(By.ID, "preview")
        # The uploaded photo's preview (a blob: URL the policy allows) has loaded.
        assert browser.execute_script("return arguments[0].naturalWidth", preview) > 0

        browser.get(f"{url}/docs")
        wait.until(
            lambda d: d.find_element(By.ID, "swagger-ui").get_attribute("data-ready") == "true"
        )
        assert browser.find_elements(By.CSS_SELECTOR, ".opblock"), "no operation rendered"

        violations = [
            entry["message"]
            for entry in browser.get_log("browser")
            if "Content Security Policy" in entry["message"]
        ]
        assert violations == []
