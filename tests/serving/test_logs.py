"""The JSON access log, in-process: one line per request on stdout, metadata only."""

from __future__ import annotations

import base64
import json
import logging
import random
from datetime import UTC, datetime

import pytest

from serving import logs, metrics


def request_lines(out: str) -> list[dict]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "request"]


def test_one_json_line_per_request_with_the_given_request_id(client, seed_png, capsys):
    capsys.readouterr()
    response = client.post(
        "/recognize", data=seed_png, content_type="image/png", headers={"X-Request-ID": "log-1"}
    )
    assert response.status_code == 200
    (line,) = request_lines(capsys.readouterr().out)
    assert line["request_id"] == "log-1" == response.headers["X-Request-ID"]
    assert line["level"] == "INFO"
    assert line["method"] == "POST"
    assert line["route"] == line["path"] == "/recognize"
    assert line["status"] == 200
    assert 0 < line["latency_ms"] < 60_000
    assert line["digit"] == 9
    assert line["model_version"] == "1"
    assert 0.5 < line["confidence"] <= 1
    assert "error" not in line
    assert {"ts", "pid", "remote_addr"} <= line.keys()


def test_a_generated_request_id_is_the_one_logged(client, capsys):
    capsys.readouterr()
    response = client.get("/health")
    (line,) = request_lines(capsys.readouterr().out)
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["route"] == "/health"
    assert "digit" not in line


ERROR_CASES = [
    # method, path, body, status, code, route label
    ("GET", "/no/such/page", None, 404, "not_found", metrics.UNMATCHED_ROUTE),
    ("POST", "/recognize", b"{oops", 400, "malformed_json", "/recognize"),
    ("GET", "/recognize", None, 405, "method_not_allowed", metrics.UNMATCHED_ROUTE),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: f"{c[3]}-{c[4]}")
def test_errors_log_their_code_status_and_rule(client, capsys, case):
    method, path, body, status, code, route = case
    capsys.readouterr()
    response = client.open(path, method=method, data=body, content_type="application/json")
    assert response.status_code == status
    (line,) = request_lines(capsys.readouterr().out)
    assert line["status"] == status
    assert line["error"] == code
    assert line["route"] == route
    assert line["path"] == path


def test_no_image_data_ever_reaches_the_log(client, seed_png, capsys):
    capsys.readouterr()
    b64 = base64.b64encode(seed_png).decode()
    client.post("/recognize", json={"image": b64})
    client.post("/recognize", json={"image": "data:image/png;base64," + b64 + "!!"})
    out = capsys.readouterr().out
    assert len(request_lines(out)) == 2
    assert b64[:24] not in out
    assert "iVBORw0KGgo" not in out  # the base64 of any PNG's signature


def test_formatter_writes_one_json_line_with_the_fields():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "two\nlines", None, None)
    record.fields = {"request_id": "r", "odd": object()}
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert (line["level"], line["msg"], line["request_id"]) == ("WARNING", "two\nlines", "r")
    assert line["ts"].endswith("+00:00")


def test_fields_come_only_from_small_json_answers():
    from flask import Response

    answer = {"digit": 3, "confidence": 0.91234, "model": {"version": "4"}, "logged": False}
    fields = logs._from_body(Response(json.dumps(answer), mimetype="application/json"))
    assert fields == {"digit": 3, "confidence": 0.9123, "model_version": "4", "logged": False}
    assert logs._from_body(Response("digit 3", mimetype="text/plain")) == {}
    big = json.dumps({"digit": 3, "pad": "x" * 20_000})
    assert logs._from_body(Response(big, mimetype="application/json")) == {}


def test_a_recognize_line_has_the_fields_its_json_would_give(client, seed_png, capsys):
    # /recognize hands its answer to the access log (logs.answered) instead of the log
    # parsing the JSON again: the line must be what parsing would have given.
    from flask import Response

    capsys.readouterr()
    response = client.post("/recognize", data=seed_png, content_type="image/png")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    parsed = logs._from_body(Response(response.data, mimetype="application/json"))
    assert parsed and {k: line[k] for k in parsed} == parsed
    assert set(parsed) == {"digit", "confidence", "model_version", "record_id"}
    assert line["status"] == 200 and line["route"] == "/recognize"


def test_a_response_other_than_the_answer_is_parsed(app):
    from flask import Response

    with app.test_request_context("/recognize", method="POST"):
        answer = Response(json.dumps({"digit": 1}), mimetype="application/json")
        logs.answered(answer, {"digit": 1})
        other = Response(json.dumps({"error": {"code": "x"}}), mimetype="application/json")
        other.status_code = 503
        assert logs.request_fields(other)["error"] == "x"
        assert logs.request_fields(answer)["digit"] == 1


LINES = [
    {"request_id": "r-1", "status": 200, "latency_ms": 1.23, "digit": 9, "logged": False},
    {"path": 'a"b\\c\n\t\x00é\u2028😀', "remote_addr": None, "confidence": 0.9999},
    {"confidence": 1e-07, "big": 10**20, "neg": -3, "zero": 0.0, "yes": True},
    {"odd": object(), "status": 500},  # not JSON: default=str, as before
    {"nan": float("nan"), "inf": float("-inf")},
    {"nested": {"a": [1, 2]}},
    {"msg": "a field named like the line's own keys", "level": "X"},
]


@pytest.mark.parametrize("fields", LINES, ids=range(len(LINES)))
def test_a_line_is_what_json_dumps_writes(fields):
    created = 1_764_558_000.4567
    expected = {
        "ts": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": "INFO",
        "msg": "request",
        **fields,
    }
    text = logs.json_line(created, "INFO", "request", fields)
    assert text == json.dumps(expected, ensure_ascii=False, default=str)


def test_the_timestamp_is_datetimes_to_the_millisecond():
    rng = random.Random(22)
    stamps = [rng.uniform(0, 4e9) for _ in range(20_000)]
    # Halfway microseconds, ends of seconds, a leap day, the epoch.
    stamps += [1.0000005, 1.9999995, 1.9995, 59.9999999, 951_782_400.0, 0.0, 0.0004]
    stamps += [s + 1e-6 * k for s in (1_764_558_000.0, 1_764_558_001.0) for k in range(-3, 4)]
    clock = logs._Clock()
    for stamp in stamps:
        want = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
        assert clock.iso(stamp) == want, stamp


def test_the_line_goes_through_logging_when_the_logger_was_given_more(client, capsys):
    # With its own handler alone the line is written directly; anything added (a handler,
    # a filter) gets the usual LogRecord, and the stdout line stays the same.
    logger = logs.access_logger()
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    capsys.readouterr()
    client.get("/health", headers={"X-Request-ID": "direct"})
    handler = Keep()
    logger.addHandler(handler)
    try:
        client.get("/health", headers={"X-Request-ID": "through-logging"})
    finally:
        logger.removeHandler(handler)
    direct, through = request_lines(capsys.readouterr().out)
    assert [r.fields["request_id"] for r in seen] == ["through-logging"]  # type: ignore[attr-defined]
    assert direct.keys() == through.keys()
    assert (direct["request_id"], through["request_id"]) == ("direct", "through-logging")


def test_a_filtered_out_line_is_not_written(client, capsys):
    logger = logs.access_logger()
    capsys.readouterr()

    def drop(record: logging.LogRecord) -> bool:
        return False

    logger.addFilter(drop)
    try:
        client.get("/health")
    finally:
        logger.removeFilter(drop)
    assert request_lines(capsys.readouterr().out) == []
