"""Reading request bodies: the size cap whatever the transfer encoding, and JSON that fails
only as a 400.

Werkzeug applies ``MAX_CONTENT_LENGTH`` to a body without ``Content-Length`` (chunked) by
reading up to the cap and stopping there: a longer body comes back cut at the cap, not
refused (``LimitedStream.readall`` never reads past its limit to see whether more was
sent). :class:`Request` reads such a body to the cap plus one byte, so a body over the cap
is a 413 and a body within it is exactly what was sent.

``json.loads`` raises ``RecursionError`` on deeply nested input (a 100,000-deep array),
which Werkzeug's ``get_json`` does not catch (it catches ``ValueError``): :func:`json_body`
turns every failure of the parser into a 400 ``malformed_json``.
"""

from __future__ import annotations

import io
import json
from typing import IO, Any

from flask import Flask
from flask import Request as FlaskRequest
from flask import request as current_request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream

from serving.errors import ApiError, body_limit_message

# Read from the server's stream in steps of this size.
_STEP = 64 * 1024


def read_at_most(stream: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes of ``stream``: fewer only if it ends first."""
    chunks, have = [], 0
    while have < size:
        chunk = stream.read(min(_STEP, size - have))
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


class Request(FlaskRequest):
    """Flask's request, refusing a streamed (chunked) body over ``MAX_CONTENT_LENGTH``."""

    @cached_property
    def stream(self) -> IO[bytes]:
        limit = self.max_content_length
        streamed = self.content_length is None and "wsgi.input_terminated" in self.environ
        if limit is None or not streamed or self.shallow:
            return get_input_stream(self.environ, max_content_length=limit)
        # The server ends the stream at the body's end (chunked transfer-encoding): one
        # byte past the cap tells a body over it from one exactly at it.
        body = read_at_most(self.environ["wsgi.input"], limit + 1)
        if len(body) > limit:
            raise RequestEntityTooLarge(body_limit_message(limit))
        return io.BytesIO(body)


def json_body() -> Any:
    """The current request's body as JSON; ApiError 400 ``malformed_json`` saying why not."""
    data = current_request.get_data(cache=True)
    try:
        return json.loads(data)
    except RecursionError:
        reason = "it is nested too deeply"
    except UnicodeDecodeError:
        reason = "it is not UTF-8 (nor UTF-16/32) text"
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    except ValueError:  # the one other: an integer of more digits than Python converts
        reason = "a number in it has too many digits"
    raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {reason}")


def init_app(app: Flask) -> None:
    app.request_class = Request
