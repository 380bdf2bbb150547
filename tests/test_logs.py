"""Logs: JSON lines with the ids of the work at hand, request ids on every answer, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from gunicorn.glogging import SafeAtoms

from app.logs import (
    JsonFormatter,
    TextFormatter,
    bind_log_context,
    log_context,
    log_handler,
    redact,
)
from app.web import current_tenant
from config.settings import Settings, SettingsError
from tests.factories import make_job
from tests.job_runs import execute_job

log = logging.getLogger("tests.logs")


class Captured:
    """What the configured handler wrote, one parsed JSON object per line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines()]

    def messages(self, fragment: str) -> list[dict]:
        return [line for line in self.lines if fragment in line["message"]]


@pytest.fixture
def captured(settings) -> Iterator[Captured]:
    """The service's own handler on the root logger, at DEBUG so every library speaks up."""
    stream = io.StringIO()
    handler = log_handler(settings, stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def logging_route(app):
    """A route that authenticates, then logs, as any /v1 view might."""

    @app.get("/v1/log-something")
    def log_something():
        current_tenant()
        log.warning("something worth a line")
        return {}

    return "/v1/log-something"


def test_each_line_is_one_json_object_with_the_bound_ids(captured):
    with bind_log_context(job_id="job-1"), bind_log_context(delivery_id="delivery-2"):
        log.info("sending %s", "it")
    log.info("after the block")

    inside, after = captured.lines
    assert inside["message"] == "sending it"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "tests.logs"
    assert inside["time"].endswith("+00:00")
    assert (inside["job_id"], inside["delivery_id"]) == ("job-1", "delivery-2")
    assert "job_id" not in after and "delivery_id" not in after


def test_a_traceback_stays_inside_its_line(captured):
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("it failed")

    (line,) = captured.lines
    assert "ValueError: broken" in line["exception"]


def test_binding_an_unknown_field_is_refused():
    with pytest.raises(TypeError, match="tennant_id"), bind_log_context(tennant_id="x"):
        pass


def test_every_answer_carries_a_request_id(client):
    ok = client.get("/healthz")
    unauthorized = client.get("/v1/jobs")
    missing = client.get("/no/such/page")

    ids = [response.headers["X-Request-Id"] for response in (ok, unauthorized, missing)]
    assert unauthorized.status_code == 401 and missing.status_code == 404
    assert all(len(request_id) == 32 for request_id in ids)
    assert len(set(ids)) == 3


def test_an_oversized_body_is_refused_with_a_request_id_too(client, auth):
    response = client.post(
        "/v1/jobs", data=b"x" * (2 * 1024 * 1024), headers={**auth, "X-Request-Id": "big-1"}
    )

    assert response.status_code == 413
    assert response.headers["X-Request-Id"] == "big-1"


def test_a_sane_incoming_request_id_is_kept(client):
    response = client.get("/healthz", headers={"X-Request-Id": "lb-7f3a.2:ok_1"})

    assert response.headers["X-Request-Id"] == "lb-7f3a.2:ok_1"


@pytest.mark.parametrize("sent", ["has spaces", "x" * 129, '"quoted"', "{json}", "-leading"])
def test_an_odd_incoming_request_id_is_replaced(client, sent):
    response = client.get("/healthz", headers={"X-Request-Id": sent})

    assert response.headers["X-Request-Id"] != sent
    assert len(response.headers["X-Request-Id"]) == 32


def test_request_logs_carry_the_request_id_and_once_authenticated_the_tenant(
    client, auth, tenant, captured, logging_route
):
    response = client.get(logging_route, headers={**auth, "X-Request-Id": "req-42"})

    assert response.status_code == 200
    (line,) = captured.messages("something worth a line")
    assert line["request_id"] == "req-42"
    assert line["tenant_id"] == str(tenant.row.id)
    assert log_context() == {}  # nothing left behind for the next request on this thread


def test_a_500_is_logged_with_its_request_id(app, client, auth, captured):
    @app.get("/v1/boom")
    def boom():
        raise RuntimeError("boom")

    response = client.get("/v1/boom", headers=auth)

    assert response.status_code == 500
    (line,) = captured.messages("unhandled error")
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert "RuntimeError: boom" in line["exception"]


def test_a_job_logs_with_its_job_id(db_session, settings, tenant, captured):
    job = make_job(db_session, tenant.row, "fail", {"message": "no luck"})

    assert execute_job(db_session, settings, job.id) is False

    (line,) = captured.messages("failed: no luck")
    assert line["job_id"] == str(job.id)


def test_the_text_format_appends_the_ids_and_redacts(settings):
    stream = io.StringIO()
    handler = log_handler(settings.replace(log_format="text"), stream)
    assert isinstance(handler.formatter, TextFormatter)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", ("bmr_0a1b.s3cret",), None)
    record.job_id = "job-9"

    line = handler.formatter.format(record)

    assert line.endswith("[x] key bmr_0a1b.<redacted> job_id=job-9")


def test_an_access_line_has_fields_and_never_the_authorization_header():
    atoms = SafeAtoms(
        {
            "h": "10.0.0.1",
            "m": "GET",
            "U": "/v1/jobs",
            "s": "200",
            "B": 12,
            "M": 3,
            "a": "curl/8",
            "{authorization}i": "Bearer bmr_0a1b2c3d4e5f.topsecretvalue",
            "{x-request-id}o": "req-1",
        }
    )
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, "%(h)s", (atoms,), None
    )

    line = json.loads(JsonFormatter().format(record))

    assert line["message"] == "GET /v1/jobs 200"
    assert (line["status"], line["duration_ms"], line["request_id"]) == (200, 3, "req-1")
    assert "topsecretvalue" not in json.dumps(line)


@pytest.mark.parametrize(
    "secret",
    [
        "bmr_0a1b2c3d4e5f.Zm9vYmFyYmF6cXV4LWxvbmctc2VjcmV0",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "Bearer some-opaque-token",
        "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
        "/r/AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    ],
)
def test_anything_shaped_like_a_secret_is_redacted(secret):
    assert "<redacted>" in redact(f"oops: {secret} was here")
    assert secret not in redact(f"oops: {secret} was here")


def test_no_secret_reaches_the_logs(client, auth, tenant, captured, logging_route):
    """Everything that hands out or takes a secret, with every logger at DEBUG."""
    api_key = tenant.api_key
    created = client.post("/v1/callbacks", json={"url": "http://127.0.0.1:1/hook"}, headers=auth)
    assert created.status_code == 201
    callback = created.get_json()
    revealed = client.get(f"/v1/callbacks/{callback['id']}/secret", headers=auth).get_json()
    rotated = client.post(f"/v1/callbacks/{callback['id']}/rotate-secret", headers=auth)
    assert rotated.status_code == 200
    new_key = client.post("/v1/keys", headers=auth).get_json()
    prefix = api_key.split(".")[0]
    client.get("/v1/jobs", headers={"Authorization": f"Bearer {prefix}.not-the-right-secret"})
    client.post("/v1/jobs", json={"type": "echo", "input": {}}, headers=auth)
    client.get(logging_route, headers=auth)
    # Code that carelessly logs a secret anyway.
    log.error("bad idea: key %s secret %s", api_key, callback["secret"])

    secrets = {
        api_key.split(".", 1)[1],
        "not-the-right-secret",
        callback["secret"],
        rotated.get_json()["secret"],
        new_key["api_key"].split(".", 1)[1],
        *(value for value in revealed.values() if str(value).startswith("whsec_")),
    }
    assert len(secrets) >= 5
    assert captured.lines, "nothing was logged: the test would prove nothing"
    leaked = [secret for secret in secrets if secret in captured.text]
    assert leaked == []


def test_an_unknown_log_format_or_level_is_refused_at_start():
    with pytest.raises(SettingsError, match="BOOMERANG_LOG_FORMAT"):
        Settings.from_env({"BOOMERANG_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="BOOMERANG_LOG_LEVEL"):
        Settings.from_env({"BOOMERANG_LOG_LEVEL": "chatty"})
    assert Settings.from_env({"BOOMERANG_LOG_LEVEL": "debug"}).log_level == "DEBUG"
