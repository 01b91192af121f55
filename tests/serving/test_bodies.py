"""Malformed and oversized bodies in-process: every failure of the JSON parser is a 400, a
streamed (chunked) body over the cap is a 413 and one within it is read whole."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from serving import create_app
from serving.errors import size_text
from serving.front import FrontConfig, render

DEEP = 100_000
JSON_PATHS = ["/recognize", "/feedback"]


def _post(client, path: str, data: bytes, **kwargs):
    return client.post(path, data=data, content_type="application/json", **kwargs)


def _assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.data[:300]
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == code
    return error["message"]


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a": ' * DEEP + b"1" + b"}" * DEEP,
        b'{"image": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b"[" * DEEP,  # deep and unfinished
    ],
    ids=["array", "object", "inside-a-field", "unclosed"],
)
def test_deeply_nested_json_is_400(client, path: str, body: bytes):
    message = _assert_error(_post(client, path, body), 400, "malformed_json")
    assert "not valid JSON" in message


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"image": "\xff\xfe\xfa"}', "UTF-8"),
        (b"\xc3\x28", "UTF-8"),
        ('{"image": "x"}'.encode("utf-16-le")[:-1], "UTF-8"),  # UTF-16 cut mid-character
        (b'{"label": 1' + b"0" * 5000 + b"}", "too many digits"),
        (b'{"image": "x",}', "line 1, column"),
        (b"\x00\x00\x00", ""),
    ],
    ids=["bad-utf8-in-string", "bad-utf8", "odd-utf16", "huge-integer", "trailing-comma", "nuls"],
)
def test_every_parser_failure_is_400(client, path: str, body: bytes, reason: str):
    message = _assert_error(_post(client, path, body), 400, "malformed_json")
    assert reason in message


def test_json_in_utf16_is_read(client, seed_png: bytes):
    # RFC 8259 asks for UTF-8, but the parser reads UTF-16/32 too; it must not be a 500.
    body = json.dumps({"image": base64.b64encode(seed_png).decode()}).encode("utf-16")
    response = _post(client, "/recognize", body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["digit"] == 9


def test_a_lone_surrogate_in_the_image_field_is_400(client):
    response = _post(client, "/recognize", b'{"image": "\\ud800AAAA"}')
    _assert_error(response, 400, "invalid_base64")


@pytest.fixture
def small_app(registry):
    app = create_app(
        {"mlflow_tracking_uri": registry.tracking_uri, "workers": 1, "max_body_bytes": 4096}
    )
    app.config.update(TESTING=True)
    return app


def _streamed(client, data: bytes, content_type: str = "application/json"):
    """A body without Content-Length, ended by the server (as gunicorn does for chunked)."""
    return client.post(
        "/recognize",
        input_stream=io.BytesIO(data),
        content_type=content_type,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def _padded_json(seed_png: bytes, size: int) -> bytes:
    body = json.dumps({"image": base64.b64encode(seed_png).decode()}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_a_streamed_body_at_the_cap_is_read_whole(small_app, seed_png: bytes):
    # Werkzeug alone would stop at the cap; a body of exactly the cap must still be whole.
    response = _streamed(small_app.test_client(), _padded_json(seed_png, 4096))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["digit"] == 9


@pytest.mark.parametrize("content_type", ["application/json", "image/png"])
def test_a_streamed_body_over_the_cap_is_413_not_cut(small_app, seed_png: bytes, content_type):
    # Cut at 4096 bytes, this JSON would be valid and the PNG whole: it must be refused.
    data = _padded_json(seed_png, 4097) if content_type == "application/json" else seed_png
    data += b" " * (4097 - len(data))
    response = _streamed(small_app.test_client(), data, content_type)
    message = _assert_error(response, 413, "request_entity_too_large")
    assert "4096 bytes" in message and "MAX_BODY_BYTES" in message


def test_a_streamed_multipart_over_the_cap_is_413(small_app, seed_png: bytes):
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    data = head + seed_png + b"\0" * 5000 + f"\r\n--{boundary}--\r\n".encode()
    response = _streamed(small_app.test_client(), data, f"multipart/form-data; boundary={boundary}")
    _assert_error(response, 413, "request_entity_too_large")


def test_a_declared_length_over_the_cap_names_the_limit(small_app):
    response = small_app.test_client().post(
        "/recognize", data=b"\0" * 5000, content_type="image/png"
    )
    message = _assert_error(response, 413, "request_entity_too_large")
    assert "4096 bytes" in message and "MAX_BODY_BYTES" in message


def test_the_base64_limit_is_named_with_its_unit(registry):
    app = create_app(
        {"mlflow_tracking_uri": registry.tracking_uri, "workers": 1, "max_base64_chars": 2048}
    )
    response = app.test_client().post("/recognize", json={"image": "A" * 3000})
    message = _assert_error(response, 413, "base64_too_large")
    assert "2048 characters (MAX_BASE64_CHARS)" in message


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (8 * 1024 * 1024, "8 MiB = 8388608 bytes"),
        (4096, "4 KiB = 4096 bytes"),
        (5000, "4.9 KiB = 5000 bytes"),
        (3 * 1024**3, "3 GiB = 3221225472 bytes"),
        (1000, "1000 bytes"),
    ],
)
def test_sizes_are_named_with_their_unit_and_exact_bytes(size: int, text: str):
    assert size_text(size) == text


def test_the_body_limit_is_named_in_kib_and_bytes(small_app):
    response = small_app.test_client().post(
        "/recognize", data=b"\0" * 5000, content_type="image/png"
    )
    message = _assert_error(response, 413, "request_entity_too_large")
    assert "larger than the limit of 4 KiB = 4096 bytes (MAX_BODY_BYTES)" in message


def test_the_base64_limit_says_how_long_the_text_was(registry):
    app = create_app(
        {"mlflow_tracking_uri": registry.tracking_uri, "workers": 1, "max_base64_chars": 2048}
    )
    response = app.test_client().post("/recognize", json={"image": "A" * 3000})
    message = _assert_error(response, 413, "base64_too_large")
    assert "3000 characters" in message


def test_a_form_over_its_limits_names_them(registry):
    # A non-file form field over Werkzeug's in-memory limit: the message lists the limits.
    app = create_app({"mlflow_tracking_uri": registry.tracking_uri, "workers": 1})
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024
    response = app.test_client().post(
        "/recognize", data={"note": "x" * 5000}, content_type="multipart/form-data"
    )
    message = _assert_error(response, 413, "request_entity_too_large")
    assert "1 KiB = 1024 bytes" in message and "8 MiB = 8388608 bytes" in message


@pytest.mark.parametrize(
    ("image", "numbers"),
    [
        (Image.new("L", (12_000, 1)), ["12000×1 pixels", "at most 10000 pixels"]),
        (Image.new("1", (9_000, 9_000)), ["81,000,000 pixels", "at most 40,000,000 pixels"]),
    ],
    ids=["side", "pixels"],
)
def test_image_limits_name_the_size_and_the_limit(client, image, numbers: list[str]):
    out = io.BytesIO()
    image.save(out, "PNG")
    response = client.post("/recognize", data=out.getvalue(), content_type="image/png")
    message = _assert_error(response, 413, "image_too_large")
    for number in numbers:
        assert number in message


def test_the_fronts_own_413_names_the_limit(tmp_path):
    # nginx answers a body over client_max_body_size itself, with this text.
    conf = render(
        FrontConfig("127.0.0.1", 8000, ("unix:/nowhere.sock",), 8 * 1024 * 1024, 30, tmp_path)
    )
    assert (
        '"code": "request_entity_too_large", "message": "the request body is larger than the '
        'limit of 8 MiB = 8388608 bytes (MAX_BODY_BYTES)"' in conf
    )
