"""What gunicorn refuses before Flask sees it still answers in the one JSON error shape, and a
chunked body over the limit is a 413 like any other. Against the real gunicorn, over raw sockets:
a client library would refuse to send most of these requests."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.models import Tenant
from tests.factories import make_tenant
from tests.support.processes import free_port, start_process, stop_process

pytestmark = pytest.mark.timeout(60)

MAX_REQUEST_BYTES = 4096
MAX_REQUEST_LINE = 1024
MAX_HEADER = 512


class Gunicorn:
    def __init__(self, port: int):
        self.port = port

    def send(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send ``raw`` and read the whole answer (every answer here closes the connection)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = dechunk(body)
        return int(status_line.split()[1]), headers, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


@pytest.fixture(scope="module")
def gunicorn(settings, engine, tmp_path_factory) -> Iterator[Gunicorn]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BOOMERANG_")},
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BOOMERANG_WEB_PORT": str(port),
        "BOOMERANG_WEB_WORKERS": "1",
        "BOOMERANG_LOG_FORMAT": "text",
        "BOOMERANG_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "BOOMERANG_MAX_REQUEST_LINE_BYTES": str(MAX_REQUEST_LINE),
        "BOOMERANG_MAX_HEADER_BYTES": str(MAX_HEADER),
        "BOOMERANG_METRICS_DIR": str(tmp_path_factory.mktemp("metrics")),
    }
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    process = start_process(
        ["gunicorn", "--config", "python:app.web.gunicorn", "app:create_app()"], env, log
    )
    server = Gunicorn(port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0]:
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield server
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def api_key(engine) -> Iterator[str]:
    """A committed tenant's key; the tenant goes afterwards with what it made (the jobs these
    tests submit stay queued: no worker runs here, and other tests probe for queued jobs)."""
    with Session(engine) as session:
        tenant = make_tenant(session, f"gunicorn-errors-{uuid.uuid4().hex[:8]}")
        session.commit()
        tenant_id = tenant.row.id
    yield tenant.api_key
    with Session(engine) as session:
        session.execute(delete(Tenant).where(Tenant.id == tenant_id))
        session.commit()


def assert_one_error_shape(status: int, headers: dict[str, str], body: bytes, expected: int):
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    document = json.loads(body)
    assert document["code"] == expected
    assert isinstance(document["status"], str) and document["status"]
    assert isinstance(document["message"], str) and document["message"]
    assert "<" not in body.decode()  # no HTML page


def test_a_request_line_over_the_limit_gets_a_json_414(gunicorn):
    raw = b"GET /v1/jobs?x=" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n"

    assert_one_error_shape(*gunicorn.send(raw), expected=414)


def test_a_header_over_the_limit_gets_a_json_431(gunicorn):
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER + b"\r\n\r\n"

    assert_one_error_shape(*gunicorn.send(raw), expected=431)


def test_a_nul_in_a_header_gets_a_json_400(gunicorn):
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n"

    assert_one_error_shape(*gunicorn.send(raw), expected=400)


def test_a_refused_request_does_not_echo_kilobytes_of_itself(gunicorn):
    status, _headers, body = gunicorn.send(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER + b"\r\n\r\n"
    )

    assert status == 431
    assert len(body) < 400


def chunked_post(path: str, api_key: str, body: bytes, chunk: int = 1000) -> bytes:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk])
        for i in range(0, len(body), chunk)
    )
    return (
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + chunks
        + b"0\r\n\r\n"
    )


def test_a_chunked_body_over_the_limit_gets_413(gunicorn, api_key):
    body = json.dumps({"type": "echo", "input": {"pad": "a" * MAX_REQUEST_BYTES}}).encode()

    assert_one_error_shape(*gunicorn.send(chunked_post("/v1/jobs", api_key, body)), expected=413)


def test_a_chunked_body_of_exactly_the_limit_is_read_whole(gunicorn, api_key):
    envelope = len(json.dumps({"type": "echo", "input": {"pad": ""}}))
    pad = "a" * (MAX_REQUEST_BYTES - envelope)
    body = json.dumps({"type": "echo", "input": {"pad": pad}}).encode()
    assert len(body) == MAX_REQUEST_BYTES

    status, _headers, answer = gunicorn.send(chunked_post("/v1/jobs", api_key, body))

    assert status == 202, answer
    assert json.loads(answer)["input"]["pad"] == pad
