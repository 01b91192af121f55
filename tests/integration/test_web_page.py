"""The web page in a real headless Chromium (Debian's chromium + chromedriver, driven by
selenium) against the live gunicorn server: draw strokes, upload a photo, read the page."""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests import tiny_model
from tests.support import Registry, add_version, set_production, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

Point = tuple[float, float]

# Strokes in pad coordinates (0..1 across, 0..1 down), drawn as a person would; shapes
# the small CI model (3 epochs on 8000 images) recognises with a wide margin.
SEVEN: list[list[Point]] = [[(0.3, 0.22), (0.72, 0.22), (0.42, 0.8)]]
ONE: list[list[Point]] = [[(0.47, 0.2), (0.53, 0.8)]]
ZERO: list[list[Point]] = [
    [
        (0.5 + 0.2 * c, 0.5 + 0.3 * s)
        for c, s in [
            (0.0, -1.0),
            (-0.71, -0.71),
            (-1.0, 0.0),
            (-0.71, 0.71),
            (0.0, 1.0),
            (0.71, 0.71),
            (1.0, 0.0),
            (0.71, -0.71),
            (0.0, -1.0),
        ]
    ]
]


def _find_binaries() -> None:
    # A failure, not a skip: .ci/run installs both, so their absence is a broken setup.
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: apt-get install chromium chromium-driver "
            "(.ci/run does this)"
        )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    _find_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1100,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _open(browser: WebDriver, url: str) -> WebDriver:
    browser.set_window_size(1100, 900)
    browser.get(f"{url}/")
    _wait(browser, lambda d: d.find_element(By.ID, "main").get_attribute("data-ready") == "true")
    return browser


def _wait(browser: WebDriver, condition, timeout: float = 30):
    try:
        return WebDriverWait(browser, timeout).until(condition)
    except TimeoutException:
        message = browser.find_element(By.ID, "message")
        raise AssertionError(
            f"page did not get there in {timeout} s; message shown: {message.text!r}"
        ) from None


def _draw(browser: WebDriver, strokes: list[list[Point]], steps: int = 12) -> None:
    """Press, drag through the points (interpolated, like a real hand), release."""
    pad = browser.find_element(By.ID, "pad")
    width, height = pad.rect["width"], pad.rect["height"]

    def offset(p: Point) -> tuple[int, int]:
        # Selenium 4 measures offsets from the element's centre.
        return round((p[0] - 0.5) * width), round((p[1] - 0.5) * height)

    for stroke in strokes:
        actions = ActionChains(browser, duration=5)
        actions.move_to_element_with_offset(pad, *offset(stroke[0])).click_and_hold()
        for a, b in itertools.pairwise(stroke):
            for i in range(1, steps + 1):
                t = i / steps
                point = (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
                actions.move_to_element_with_offset(pad, *offset(point))
        actions.release().perform()


def _bars_top(browser: WebDriver) -> list:
    return browser.find_elements(By.CSS_SELECTOR, "#bars li.top")


def _result(browser: WebDriver, kind: str = "digit") -> dict[str, object]:
    """The answer on screen once it is of ``kind``: ``draft`` (a live guess while drawing),
    ``digit`` (a final answer, logged, open to feedback) or ``number``."""
    result = browser.find_element(By.ID, "result")
    _wait(browser, lambda d: result.is_displayed() and result.get_attribute("data-kind") == kind)
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    return {
        "digit": browser.find_element(By.ID, "digit").text,
        "confidence": browser.find_element(By.ID, "confidence").text,
        "model": browser.find_element(By.ID, "model-name").text,
        "version": browser.find_element(By.ID, "model-version").text,
        "bars": [b.get_attribute("aria-label") for b in bars],
        "top": top[0].get_attribute("aria-label") if (top := _bars_top(browser)) else None,
    }


@pytest.mark.parametrize(
    ("digit", "strokes"),
    [
        pytest.param(7, SEVEN, id="seven"),
        pytest.param(1, ONE, id="one"),
        pytest.param(0, ZERO, id="zero"),
    ],
)
def test_drawn_digit_is_recognised(
    browser: WebDriver, live_server: str, shots: Path, digit: int, strokes
):
    _open(browser, live_server)
    _draw(browser, strokes)
    browser.find_element(By.ID, "recognize").click()
    result = _result(browser)
    browser.save_screenshot(str(shots / f"drawn-{digit}.png"))
    assert result["digit"] == str(digit), result
    assert result["confidence"].endswith("%")
    assert (result["model"], result["version"]) == ("digits", "1")
    assert len(result["bars"]) == 10
    assert result["top"].startswith(f"{digit}: ")


def test_uploaded_photo_is_recognised(
    browser: WebDriver, live_server: str, shots: Path, seed_png: bytes, tmp_path: Path
):
    photo = tmp_path / "nine.png"
    photo.write_bytes(seed_png)
    _open(browser, live_server)
    browser.find_element(By.ID, "upload").send_keys(str(photo))
    result = _result(browser)
    browser.save_screenshot(str(shots / "uploaded-9.png"))
    assert result["digit"] == "9", result
    assert browser.find_element(By.ID, "preview").get_attribute("src").startswith("blob:")


def test_server_errors_are_shown(browser: WebDriver, live_server: str, shots: Path, tmp_path: Path):
    not_an_image = tmp_path / "seven.txt"
    not_an_image.write_text("seven\n")
    _open(browser, live_server)
    browser.find_element(By.ID, "upload").send_keys(str(not_an_image))
    message = browser.find_element(By.ID, "message")
    _wait(browser, lambda d: message.is_displayed())
    browser.save_screenshot(str(shots / "error.png"))
    assert "not a supported format" in message.text and "(415)" in message.text
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_empty_canvas_asks_for_a_digit_and_sends_nothing(
    browser: WebDriver, live_server: str, shots: Path
):
    _open(browser, live_server)
    browser.find_element(By.ID, "recognize").click()
    message = browser.find_element(By.ID, "message")
    _wait(browser, lambda d: message.is_displayed())
    browser.save_screenshot(str(shots / "empty.png"))
    assert "Draw a digit first" in message.text
    assert not browser.find_element(By.ID, "result").is_displayed()
    # Escape clears a drawing: afterwards the canvas counts as empty again.
    _draw(browser, ONE)
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    browser.find_element(By.ID, "recognize").click()
    _wait(browser, lambda d: message.is_displayed())
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_keyboard_recognise_feedback_and_start_again(
    browser: WebDriver, live_server: str, shots: Path
):
    _open(browser, live_server)
    _draw(browser, SEVEN)
    pad = browser.find_element(By.ID, "pad")
    assert browser.switch_to.active_element == pad  # drawing focuses the pad
    pad.send_keys(Keys.ENTER)
    assert _result(browser)["digit"] == "7"

    # "Wrong? It was …": the predicted digit is not offered; another one is recorded.
    buttons = browser.find_elements(By.CSS_SELECTOR, "#feedback-digits button")
    assert [b.text for b in buttons] == [str(d) for d in range(10)]
    assert not buttons[7].is_enabled()
    buttons[1].send_keys(Keys.ENTER)
    status = browser.find_element(By.ID, "feedback-status")
    _wait(browser, lambda d: status.text and status.text != "Sending…")
    browser.save_screenshot(str(shots / "feedback.png"))
    assert status.text == "Thank you! Recorded as 1."
    assert buttons[1].get_attribute("aria-pressed") == "true"

    browser.find_element(By.ID, "again").click()
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert browser.switch_to.active_element == pad


def test_low_confidence_is_flagged(browser: WebDriver, live_server: str, shots: Path):
    # The CI model is too sure of clean strokes to hesitate on cue, so this one answer is
    # canned: the page's fetch is wrapped to return a doubtful (but well-formed) result.
    _open(browser, live_server)
    browser.execute_script(
        """
        const probabilities = [0.02, 0.01, 0.03, 0.38, 0.02, 0.31, 0.02, 0.01, 0.18, 0.02];
        const doubtful = {digit: 3, confidence: 0.38, probabilities, low_confidence: true,
                          model: {name: "digits", version: "1"}, request_id: "canned"};
        window.fetch = async () => new Response(JSON.stringify(doubtful),
            {status: 200, headers: {"Content-Type": "application/json"}});
        """
    )
    _draw(browser, ONE)
    browser.find_element(By.ID, "recognize").click()
    result = _result(browser)
    browser.save_screenshot(str(shots / "low-confidence.png"))
    assert result["digit"] == "3" and result["confidence"] == "38.0 %"
    assert browser.find_element(By.ID, "low-confidence").is_displayed()


def test_page_fits_a_phone(browser: WebDriver, live_server: str, shots: Path):
    _open(browser, live_server)
    browser.set_window_size(390, 844)
    pad = browser.find_element(By.ID, "pad")
    page_width = browser.execute_script("return document.documentElement.scrollWidth")
    viewport = browser.execute_script("return window.innerWidth")
    assert page_width <= viewport, "horizontal scrolling on a phone-sized screen"
    assert pad.rect["width"] <= viewport
    _draw(browser, SEVEN)
    browser.find_element(By.ID, "recognize").click()
    assert _result(browser)["digit"] == "7"
    browser.save_screenshot(str(shots / "phone.png"))


def test_assets_come_from_the_service(browser: WebDriver, live_server: str):
    _open(browser, live_server)
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls, "no resources loaded"
    assert all(u.startswith(live_server) for u in urls), urls


def test_status_line_says_when_requests_cannot_be_stored(
    browser: WebDriver, live_server: str, registry, tmp_path: Path
):
    def status(driver: WebDriver) -> str:
        return driver.find_element(By.ID, "status-line").text

    _open(browser, live_server)
    _wait(browser, lambda d: status(d).startswith("Serving model digits version"))
    blocked = tmp_path / "data"
    blocked.write_text("a file where the data directory should be")
    with start_server(
        registry.env, {"DATA_DIR": str(blocked)}, log_dir=tmp_path, wait_ready=False
    ) as url:
        _open(browser, url)
        _wait(browser, lambda d: "cannot be stored" in status(d))


# ---------------------------------------------------------------- live answers and the strip

# Wraps the page's fetch (every request still goes to the real service) and records, for
# each, its URL, status and whether the answer carried a record id; and every kind of
# answer the result area showed, in order. DELAY_DRAFTS_MS holds draft answers back.
RECORD = """
window.__requests = [];
window.__kinds = [];
window.__delayDrafts = arguments[0];
const realFetch = window.fetch;
window.fetch = async (url, options) => {
  const response = await realFetch(url, options);
  const body = await response.clone().json().catch(() => null);
  if (String(url).includes("draft=true") && window.__delayDrafts) {
    await new Promise((done) => setTimeout(done, window.__delayDrafts));
  }
  window.__requests.push({url: String(url), status: response.status,
                          recorded: Boolean(body && body.record_id)});
  return response;
};
const result = document.getElementById("result");
new MutationObserver(() => window.__kinds.push(result.dataset.kind))
  .observe(result, {attributes: true, attributeFilter: ["data-kind"]});
"""


def _record(browser: WebDriver, delay_drafts_ms: int = 0) -> None:
    browser.execute_script(RECORD, delay_drafts_ms)


def _requests(browser: WebDriver, path: str = "/recognize") -> list[dict[str, object]]:
    return [r for r in browser.execute_script("return window.__requests") if path in r["url"]]


def test_live_answer_then_the_logged_one_with_the_models_28x28(
    browser: WebDriver, live_server: str, shots: Path
):
    _open(browser, live_server)
    browser.set_window_size(1280, 800)
    _record(browser)
    _draw(browser, SEVEN)  # and nothing pressed: the page answers by itself
    assert _result(browser, "digit")["digit"] == "7"
    kinds = browser.execute_script("return window.__kinds")
    assert kinds[:2] == ["draft", "digit"], kinds
    draft, final = _requests(browser)
    assert "draft=true" in draft["url"] and not draft["recorded"], draft
    assert "draft=" not in final["url"] and final["recorded"], final
    # The 28×28 beside the drawing is the service's own pre-processing output.
    model_input = browser.find_element(By.ID, "model-input")
    assert model_input.is_displayed()
    assert model_input.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", model_input) == 28
    assert browser.find_element(By.ID, "preview").get_attribute("src").startswith("data:image/png")
    browser.save_screenshot(str(shots / "desktop-live.png"))


def test_stale_draft_answers_are_dropped(browser: WebDriver, live_server: str):
    _open(browser, live_server)
    _record(browser, delay_drafts_ms=1500)
    _draw(browser, ONE)
    # Wiped while its draft is on the way back: that answer is for a drawing gone.
    _wait(
        browser,
        lambda d: (
            d.execute_script("return window.__requests.length") == 0
            and d.execute_script(
                "return document.getElementById('result-card').getAttribute('aria-busy')"
            )
            == "true"
        ),
    )
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    _wait(browser, lambda d: len(_requests(d)) == 1)
    card = browser.find_element(By.ID, "result-card")
    _wait(browser, lambda d: card.get_attribute("aria-busy") == "false")
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert browser.execute_script("return window.__kinds") == []
    assert browser.find_element(By.ID, "placeholder").is_displayed()


def test_an_error_clears_the_old_result(
    browser: WebDriver, live_server: str, shots: Path, tmp_path: Path
):
    not_an_image = tmp_path / "seven.txt"
    not_an_image.write_text("seven\n")
    _open(browser, live_server)
    _draw(browser, SEVEN)
    browser.find_element(By.ID, "recognize").click()
    assert _result(browser)["digit"] == "7"
    browser.find_element(By.ID, "upload").send_keys(str(not_an_image))
    message = browser.find_element(By.ID, "message")
    _wait(browser, lambda d: message.is_displayed())
    browser.save_screenshot(str(shots / "error-after-result.png"))
    assert "not a supported format" in message.text and "(415)" in message.text
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert browser.find_element(By.ID, "placeholder").is_displayed()


def test_right_and_wrong_feedback_and_the_strip_of_recent_drawings(
    browser: WebDriver, live_server: str, shots: Path
):
    _open(browser, live_server)
    strip = browser.find_element(By.ID, "strip")
    assert not browser.find_element(By.ID, "recent").is_displayed()  # nothing drawn yet

    _draw(browser, SEVEN)
    browser.find_element(By.ID, "recognize").click()
    assert _result(browser)["digit"] == "7"
    right = browser.find_element(By.ID, "right")
    assert right.text == "Right, it is 7"
    right.click()
    status = browser.find_element(By.ID, "feedback-status")
    _wait(browser, lambda d: status.text and status.text != "Sending…")
    assert status.text == "Thank you! Confirmed as 7."
    assert right.get_attribute("aria-pressed") == "true"

    browser.find_element(By.ID, "again").click()
    _draw(browser, ONE)
    browser.find_element(By.ID, "recognize").click()
    assert _result(browser)["digit"] == "1"
    browser.find_element(By.CSS_SELECTOR, "#feedback-digits button[data-label='4']").click()
    _wait(browser, lambda d: status.text == "Thank you! Recorded as 4.")

    items = strip.find_elements(By.TAG_NAME, "li")
    assert len(items) == 2
    assert items[0].get_attribute("aria-label").startswith("1, ")
    assert items[0].get_attribute("aria-label").endswith(", it was 4")
    assert items[1].get_attribute("aria-label").startswith("7, ")
    assert items[1].get_attribute("aria-label").endswith(", marked right")
    browser.save_screenshot(str(shots / "feedback-and-strip.png"))

    # The strip keeps the last eight: the 7 drawn first drops out.
    for _ in range(7):
        browser.find_element(By.ID, "again").click()
        _draw(browser, ZERO)
        browser.find_element(By.ID, "recognize").click()
        _result(browser)
    _wait(browser, lambda d: len(strip.find_elements(By.TAG_NAME, "li")) == 8)
    labels = [i.get_attribute("aria-label") for i in strip.find_elements(By.TAG_NAME, "li")]
    assert all(label.startswith("0, ") for label in labels[:7]), labels
    assert labels[7].startswith("1, "), labels


def test_no_keyboard_hints_on_a_touch_screen(browser: WebDriver, live_server: str):
    def hints(driver: WebDriver) -> list[bool]:
        return [e.is_displayed() for e in driver.find_elements(By.CSS_SELECTOR, ".key-hint")]

    _open(browser, live_server)
    assert hints(browser) and all(hints(browser))
    browser.execute_cdp_cmd(
        "Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5}
    )
    try:
        _open(browser, live_server)
        assert browser.execute_script("return matchMedia('(pointer: coarse)').matches")
        assert not any(hints(browser))
    finally:
        browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})


def test_read_button_is_there_when_the_service_reads_numbers(browser: WebDriver, live_server: str):
    _open(browser, live_server)
    paths = browser.execute_script(
        "return fetch('/openapi.json').then((r) => r.json()).then((d) => Object.keys(d.paths))"
    )
    assert browser.find_element(By.ID, "read").is_displayed() == ("/read" in paths)


# "10" written across the pad: a one on the left, a zero on the right, paper between.
TEN: list[list[Point]] = [
    [(0.27, 0.3), (0.3, 0.7)],
    [
        (0.66 + 0.12 * math.cos(a), 0.5 + 0.2 * math.sin(a))
        for a in (i * math.pi / 6 - math.pi / 2 for i in range(13))
    ],
]


def test_a_drawn_number_is_read_and_labelled(browser: WebDriver, live_server: str, shots: Path):
    _open(browser, live_server)
    paths = browser.execute_script(
        "return fetch('/openapi.json').then((r) => r.json()).then((d) => Object.keys(d.paths))"
    )
    if "/read" not in paths:
        pytest.skip("this service has no POST /read")
    _draw(browser, TEN)
    # /recognize does not guess at two digits; the page says what to do instead.
    message = browser.find_element(By.ID, "message")
    _wait(browser, lambda d: message.is_displayed())
    assert "Read a number" in message.text
    browser.find_element(By.ID, "read").click()
    result = _result(browser, "number")
    assert result["digit"] == "10"
    assert not message.is_displayed()
    digits = browser.find_elements(By.CSS_SELECTOR, "#number-digits li")
    assert [d.text.split()[0] for d in digits] == ["1", "0"]
    browser.find_element(By.ID, "true-number").send_keys("17")
    browser.find_element(By.ID, "send-number").click()
    status = browser.find_element(By.ID, "feedback-status")
    _wait(browser, lambda d: status.text and status.text != "Sending…")
    assert status.text == "Thank you! Recorded as 17."
    label = browser.find_element(By.CSS_SELECTOR, "#strip li").get_attribute("aria-label")
    assert label.startswith("10, ") and label.endswith(", it was 17")
    browser.save_screenshot(str(shots / "number.png"))


def test_a_degraded_service_says_so_in_a_small_line(browser: WebDriver, tiny_onnx, tmp_path: Path):
    # A registry of its own: Production moves to a version whose weights are not weights,
    # so the one worker keeps serving version 1 and /ready says "degraded".
    import mlflow

    reg = Registry.create(tmp_path / "registry")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    extra = {"WORKERS": "1", "FRONT": "none", "MODEL_POLL_INTERVAL": "1"}
    with start_server(reg.env, extra, log_dir=tmp_path) as url:
        _open(browser, url)
        note = browser.find_element(By.ID, "service-note")
        assert not note.is_displayed()
        client = mlflow.MlflowClient(reg.tracking_uri, reg.tracking_uri)
        source = client.get_model_version_download_uri("digits", "1").removeprefix("file://")
        broken = tmp_path / "broken"
        shutil.copytree(source, broken)
        for weights in broken.rglob("*.onnx"):
            weights.write_bytes(b"these are not weights")
        set_production(reg.tracking_uri, add_version(reg.tracking_uri, str(broken)))
        _wait(
            browser,
            lambda d: (
                d.execute_script(
                    "return fetch('/ready').then((r) => r.json()).then((b) => b.status)"
                )
                == "degraded"
            ),
            timeout=60,
        )
        _open(browser, url)
        _wait(browser, lambda d: d.find_element(By.ID, "service-note").is_displayed())
        text = browser.find_element(By.ID, "service-note").text
        assert text.startswith("Degraded service"), text
