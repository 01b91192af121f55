"""The image log inside the app (test client, real registry): what /recognize stores, and
what it answers when storing fails."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import serving.image_log
from imagelog import StorageError
from imagelog.base import sha256_hex
from serving.image_log import close, describe, recorder
from tests.support import postgres_schema


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def app(request, registry, tmp_path_factory):
    from serving import create_app

    config = {"mlflow_tracking_uri": registry.tracking_uri, "workers": 1}
    data_dir = tmp_path_factory.mktemp("imagelog-app")
    with (
        postgres_schema(request.getfixturevalue("pg_url"))
        if request.param == "postgres"
        else contextlib.nullcontext()
    ) as schema:
        if schema:
            config |= {
                "image_log_backend": "postgres",
                "database_url": request.getfixturevalue("pg_url"),
                "database_schema": schema,
            }
        else:
            config |= {"image_log_backend": "sqlite", "data_dir": data_dir}
        app = create_app(config)
        app.config.update(TESTING=True)
        yield app
        close(app)


@pytest.fixture
def client(app):
    return app.test_client()


def _log(app):
    with app.app_context():
        return recorder().image_log


def test_an_answer_is_stored_with_its_image(app, client, seed_png: bytes):
    response = client.post("/recognize", data=seed_png, content_type="image/png")
    assert response.status_code == 200
    body = response.get_json()
    assert "logged" not in body
    stored = _log(app).get(body["record_id"])
    assert stored is not None
    assert stored.sha256 == sha256_hex(seed_png)
    assert (stored.input_format, stored.width, stored.height) == ("PNG", 28, 28)
    assert stored.byte_size == len(seed_png)
    assert (stored.digit, stored.probabilities) == (body["digit"], body["probabilities"])
    assert (stored.model_name, stored.model_version) == ("digits", body["model"]["version"])
    assert _log(app).image(stored.sha256) == seed_png


def test_a_rejected_request_is_not_stored_but_logged(app, client, caplog):
    from tests.cases import BAD_IMAGES

    blank = next(case for case in BAD_IMAGES if case.id == "blank-white")
    before = _log(app).count()
    with caplog.at_level(logging.WARNING, logger="serving.image_log"):
        response = client.post(
            "/recognize", data=blank.body, content_type="image/png", headers={"X-Request-ID": "r1"}
        )
    assert response.status_code == 422
    assert _log(app).count() == before
    assert "rejected /recognize request_id=r1 status=422 code=no_digit" in caplog.text


def test_a_reused_request_id_names_no_record(app, client, seed_png: bytes, mnist):
    # X-Request-ID is the client's correlation id: two answers may share it, each is its
    # own record under an id the server chose.
    from training.variants import png_bytes

    headers = {"X-Request-ID": f"reused-{app.name}-{id(app)}"}
    first = client.post("/recognize", data=seed_png, content_type="image/png", headers=headers)
    other = client.post(
        "/recognize", data=png_bytes(mnist.x_test[0]), content_type="image/png", headers=headers
    )
    assert (first.status_code, other.status_code) == (200, 200)
    ids = {first.get_json()["record_id"], other.get_json()["record_id"]}
    assert len(ids) == 2 and headers["X-Request-ID"] not in ids
    assert _log(app).get(headers["X-Request-ID"]) is None


def _failing(*args: object, **kwargs: object) -> None:
    raise StorageError("disk full (simulated)")


def test_storage_failure_refuses_the_answer_by_default(app, client, seed_png, monkeypatch):
    monkeypatch.setattr(_log(app), "record", _failing)
    before = _failures_counted(client)
    response = client.post("/recognize", data=seed_png, content_type="image/png")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"
    assert _failures_counted(client) == before + 1


def _failures_counted(client) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("digits_image_log_failures_total "):
            return float(line.split()[1])
    return 0.0


def test_storage_failure_can_be_answered_unlogged(app, client, seed_png, monkeypatch):
    monkeypatch.setattr(_log(app), "record", _failing)
    with app.app_context():
        monkeypatch.setattr(recorder(), "policy", "answer")
    response = client.post("/recognize", data=seed_png, content_type="image/png")
    assert response.status_code == 200
    assert response.get_json()["logged"] is False
    assert response.get_json()["digit"] == 9


def test_with_store_images_off_the_prediction_is_kept_without_the_bytes(
    app, client, mnist, monkeypatch
):
    from training.variants import png_bytes

    image = png_bytes(mnist.x_test[1])
    monkeypatch.setattr(_log(app), "store_images", False)
    body = client.post("/recognize", data=image, content_type="image/png").get_json()
    stored = _log(app).get(body["record_id"])
    assert stored.image_stored is False
    assert stored.sha256 == sha256_hex(image)
    assert _log(app).image(stored.sha256) is None


def test_describe_reads_the_header_only(seed_png: bytes):
    assert describe(seed_png) == ("PNG", 28, 28)
    assert describe(b"\x89PNG\r\n\x1a\n broken") == ("PNG", None, None)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
@pytest.mark.parametrize("size", [(28, 28), (640, 3), (1, 480), (70000, 1)])
def test_a_png_is_described_as_pillow_reads_its_header(mode: str, size: tuple[int, int]):
    # PNGs are described from their IHDR chunk without Pillow: the same size, any mode.
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", interlace=size == (28, 28))
    png = buffer.getvalue()
    with Image.open(io.BytesIO(png)) as img:
        assert describe(png) == ("PNG", img.width, img.height) == ("PNG", *size)


def test_retention_runs_every_n_writes_one_at_a_time(monkeypatch, seed_png: bytes):
    from flask import Flask, g

    from imagelog import Retention
    from pyfunc.model import Prediction
    from serving import image_log
    from serving.config import Settings

    class FakeLog:
        retention = Retention(max_count=10)
        runs = 0

        def record(self, entry) -> None:
            pass

        def apply_retention(self) -> int:
            self.runs += 1
            return 0

    monkeypatch.setattr(image_log, "RETENTION_EVERY", 3)
    fake = FakeLog()
    rec = image_log.Recorder(fake, Settings())
    monkeypatch.setattr(rec, "_spawn", lambda work: work())  # at once, to count the runs
    with Flask("t").test_request_context():
        g.request_id = "r"
        for _ in range(7):
            upload = rec.stage(seed_png)
            assert rec.record(upload, Prediction(9, 0.9, [0.01] * 9 + [0.9]), "d", "1")
    assert fake.runs == 2
    with rec._retention_running:  # one is still running: the next trigger is skipped
        rec.retain_in_background()
    assert fake.runs == 2


def test_retention_also_runs_after_a_share_of_the_quota_was_written(monkeypatch, seed_png):
    from flask import Flask

    from imagelog import Retention
    from pyfunc.model import Prediction
    from serving import image_log
    from serving.config import Settings

    class FakeLog:
        # A 20th of the quota is 1.5 images: large uploads trigger retention before the
        # RETENTION_EVERY-th write, so one client cannot run far past the quota.
        retention = Retention(max_image_bytes=len(seed_png) * 30)
        runs = 0

        def record(self, entry) -> None:
            pass

        def apply_retention(self) -> int:
            self.runs += 1
            return 0

    fake = FakeLog()
    rec = image_log.Recorder(fake, Settings())
    monkeypatch.setattr(rec, "_spawn", lambda work: work())
    with Flask("t").test_request_context():
        for _ in range(6):
            upload = rec.stage(seed_png)
            assert rec.record(upload, Prediction(9, 0.9, [0.01] * 9 + [0.9]), "d", "1")
    assert fake.runs == 3  # after writes 2, 4 and 6


def _app_without_storage(registry, blocker: Path, **settings: object):
    """An app whose DATA_DIR is a file, so the SQLite image log cannot open."""
    from serving import create_app

    blocker.write_text("a file where the data directory should be")
    config = {
        "mlflow_tracking_uri": registry.tracking_uri,
        "workers": 1,
        "image_log_backend": "sqlite",
        "data_dir": blocker,
    }
    return create_app({**config, **settings})


def test_unusable_sqlite_storage_starts_the_app_and_refuses_until_it_is_usable(
    registry, tmp_path, seed_png, monkeypatch
):
    monkeypatch.setattr(serving.image_log, "PROBE_CACHE_SECONDS", 0)  # every /ready probes
    blocker = tmp_path / "data"
    app = _app_without_storage(registry, blocker)
    client = app.test_client()
    try:
        not_ready = client.get("/ready")
        assert not_ready.status_code == 503  # a load balancer sends nobody here meanwhile
        assert not_ready.get_json()["error"]["code"] == "storage_unavailable"
        assert not_ready.get_json()["storage"]["state"] == "unavailable"
        refused = client.post("/recognize", data=seed_png, content_type="image/png")
        assert refused.status_code == 503
        assert refused.get_json()["error"]["code"] == "storage_unavailable"
        blocker.unlink()
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.get_json()["storage"] == {"state": "ok", "error": None}
        answered = client.post("/recognize", data=seed_png, content_type="image/png")
        assert answered.status_code == 200
        assert _log(app).get(answered.get_json()["record_id"]) is not None
    finally:
        close(app)


def test_unusable_storage_with_policy_answer_is_ready_but_says_so(registry, tmp_path):
    app = _app_without_storage(registry, tmp_path / "data", log_failure_policy="answer")
    try:
        ready = app.test_client().get("/ready")
        assert ready.status_code == 200  # it answers, unlogged
        assert ready.get_json()["storage"]["state"] == "unavailable"
        assert ready.get_json()["storage"]["error"]  # says why, in words fit for the public
    finally:
        close(app)


def test_a_refused_image_leaves_nothing_behind(app, client):
    log = _log(app)
    files = getattr(log, "images_dir", None)  # SQLite stages image files; PostgreSQL does not

    def stored() -> tuple:
        on_disk = sorted(p for p in files.rglob("*") if p.is_file()) if files else []
        return log.count(), log.image_count(), on_disk

    before = stored()
    blank = io.BytesIO()
    Image.new("L", (40, 40), 255).save(blank, "PNG")
    response = client.post("/recognize", data=blank.getvalue(), content_type="image/png")
    assert response.get_json()["error"]["code"] == "no_digit"
    assert stored() == before


def _write_spy(log, monkeypatch) -> list[int]:
    """Sizes of the image bytes the backend is asked to write (file or row)."""
    sizes: list[int] = []
    if hasattr(log, "_write_file"):
        real_file = log._write_file

        def spy_file(path, data):
            sizes.append(len(data))
            return real_file(path, data)

        monkeypatch.setattr(log, "_write_file", spy_file)
    real_record = log.record

    def spy_record(entry):
        sizes.append(-1 if entry.image is None else len(entry.image))
        return real_record(entry)

    monkeypatch.setattr(log, "record", spy_record)
    return sizes


def test_junk_behind_an_image_signature_is_refused_before_any_write(app, client, monkeypatch):
    log = _log(app)
    sizes = _write_spy(log, monkeypatch)
    before = log.count()
    junk = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4096  # 1 MiB that no decoder accepts
    response = client.post("/recognize", data=junk, content_type="image/png")
    assert 400 <= response.status_code < 500
    assert sizes == []  # not staged, not written, not even asked for
    assert log.count() == before


def test_what_trails_the_image_is_counted_not_stored(app, client, seed_png, monkeypatch):
    log = _log(app)
    sizes = _write_spy(log, monkeypatch)
    trailer = b"\xff\xd9phone trailer" + bytes(300_000)
    response = client.post("/recognize", data=seed_png + trailer, content_type="image/png")
    assert response.status_code == 200
    stored = log.get(response.get_json()["record_id"])
    assert stored.trailing_bytes == len(trailer)
    assert (stored.byte_size, stored.sha256) == (len(seed_png), sha256_hex(seed_png))
    assert log.image(stored.sha256) == seed_png
    assert max(sizes) == len(seed_png)


def test_a_phone_jpeg_keeps_its_picture_up_to_its_end(app, client, mnist, monkeypatch):
    picture = io.BytesIO()
    Image.fromarray(mnist.x_test[0]).resize((280, 280)).convert("RGB").save(
        picture, "JPEG", quality=90, exif=Image.Exif()
    )
    jpeg = picture.getvalue()
    appended = b"\xff\xd8" + bytes(5000) + b"\xff\xd9"  # e.g. a second, larger picture
    response = client.post("/recognize", data=jpeg + appended, content_type="image/jpeg")
    assert response.status_code == 200
    stored = _log(app).get(response.get_json()["record_id"])
    assert (stored.byte_size, stored.trailing_bytes) == (len(jpeg), len(appended))
    assert _log(app).image(stored.sha256) == jpeg


def test_ready_probes_storage_by_writing_and_caches_the_answer(app, client, monkeypatch):
    log = _log(app)
    probes: list[float] = []
    real = log.check

    def counting() -> None:
        probes.append(time.monotonic())
        real()

    monkeypatch.setattr(log, "check", counting)
    monkeypatch.setattr(serving.image_log, "PROBE_CACHE_SECONDS", 0.3)
    for _ in range(5):
        assert client.get("/ready").status_code == 200
    time.sleep(0.35)
    assert client.get("/ready").status_code == 200
    assert len(probes) == 2

    def full() -> None:
        raise StorageError("[Errno 28] No space left on device")

    monkeypatch.setattr(log, "check", full)
    time.sleep(0.35)
    not_ready = client.get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.get_json()["error"]["code"] == "storage_unavailable"


@pytest.fixture
def unlogged_app(registry, tmp_path: Path):
    from serving import create_app

    data_dir = tmp_path / "data"
    app = create_app(
        {
            "mlflow_tracking_uri": registry.tracking_uri,
            "workers": 1,
            "data_dir": data_dir,
            "image_log": False,
            "admin_token": "t" * 32,
        }
    )
    app.config.update(TESTING=True)
    yield app
    close(app)


def test_image_log_off_writes_nothing_and_says_so(unlogged_app, seed_png: bytes, mnist):
    """IMAGE_LOG=off: the same prediction, no record (nothing opened or written under
    DATA_DIR), no record_id or token, "logged": false; the prediction is still counted."""
    from tests.serving.test_metrics import delta, scrape

    client = unlogged_app.test_client()
    data_dir = unlogged_app.config["SETTINGS"].data_dir
    before = scrape(client)
    response = client.post("/recognize", data=seed_png, content_type="image/png")
    assert response.status_code == 200
    body = response.get_json()
    assert body["logged"] is False
    assert "record_id" not in body and "feedback_token" not in body
    assert delta(before, scrape(client), "digits_predictions_total", digit=str(body["digit"])) == 1
    assert not (data_dir / "imagelog.sqlite3").exists()
    assert not (data_dir.exists() and any(data_dir.rglob("imagelog*")))
    # /read's digits are not logged either, and it says so the same way.
    pair = np.hstack([mnist.x_test[9], np.zeros((28, 8), np.uint8), mnist.x_test[0]])
    buf = io.BytesIO()
    Image.fromarray(pair).save(buf, format="PNG")
    read = client.post("/read", data=buf.getvalue(), content_type="image/png")
    assert read.status_code == 200, read.get_json()
    assert read.get_json()["logged"] is False and "record_id" not in read.get_json()
    # Nothing to store means nothing that can fail: ready, with storage "ok".
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["storage"]["state"] == "ok"


def test_image_log_off_answers_feedback_and_reviews_409(unlogged_app):
    client = unlogged_app.test_client()
    response = client.post("/feedback", json={"record_id": "r", "feedback_token": "t", "label": 3})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "image_log_off"
    assert "IMAGE_LOG=off" in response.get_json()["error"]["message"]
    reviews = client.get("/admin/reviews", headers={"Authorization": "Bearer " + "t" * 32})
    assert reviews.status_code == 409
    assert reviews.get_json()["error"]["code"] == "image_log_off"


def test_image_log_setting_reads_off_from_the_environment(monkeypatch):
    from serving.config import load_settings

    assert load_settings().image_log is True
    monkeypatch.setenv("IMAGE_LOG", "off")
    assert load_settings().image_log is False
