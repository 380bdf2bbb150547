"""gunicorn's threaded worker, answering the errors gunicorn raises itself in the one JSON shape.

gunicorn refuses some requests before Flask sees them (a request line over
BOOMERANG_MAX_REQUEST_LINE_BYTES gets 414, a header over BOOMERANG_MAX_HEADER_BYTES 431, a NUL
or a malformed header 400, an unknown transfer coding 501) and writes an HTML page for each.
Clients of a JSON API should not need a second parser for those: this worker writes the body
that every other error has, with the headers every API answer carries.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from app.errors import error_body
from app.web.security_headers import API_RESPONSE, EVERY_RESPONSE

# gunicorn's messages quote what it refused; a refused 8 KB header need not come back whole.
MAX_MESSAGE_CHARS = 200


def json_error(status: int, message: str) -> bytes:
    """The whole HTTP/1.1 answer for an error gunicorn found: status line, headers and body."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "…"
    body = json.dumps(error_body(status, message or None)).encode()
    headers = {
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **EVERY_RESPONSE,
        **API_RESPONSE,
    }
    phrase = error_body(status)["status"]
    head = f"HTTP/1.1 {status} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def write_json_error(sock: socket.socket, status_int: int, _reason: str, mesg: str) -> None:
    util.write_nonblock(sock, json_error(status_int, mesg))


class JsonErrorWorker(ThreadWorker):
    def init_process(self, *args: Any, **kwargs: Any) -> None:
        # gunicorn's handle_error writes through util.write_error, looked up at each call; this
        # process only ever runs this worker, so replacing it here changes nothing else.
        util.write_error = write_json_error
        super().init_process(*args, **kwargs)
