"""The API speaks JSON only: a body of any other type is a 415, a request without a body is fine."""

from __future__ import annotations

import io
import json

import pytest

from tests.api.test_errors import assert_error_shape
from tests.factories import make_callback

ANY_ID = "00000000-0000-4000-8000-000000000000"
JOB = json.dumps({"type": "echo", "input": {"text": "hi"}})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/callbacks"),
        ("PATCH", f"/v1/callbacks/{ANY_ID}"),
        ("POST", "/v1/jobs"),
        ("POST", f"/v1/callbacks/{ANY_ID}/rotate-secret"),
        ("PUT", "/v1/jobs"),
    ],
)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "text/json", None],
)
def test_a_body_that_is_not_json_is_a_415_naming_the_type_expected(
    client, auth, sent_tasks, method, path, content_type
):
    headers = dict(auth)
    if content_type is not None:
        headers["Content-Type"] = content_type

    response = client.open(path, method=method, data=JOB, headers=headers)

    if method == "PUT":  # no route takes PUT: the method is refused before the body is looked at
        assert_error_shape(response, 405)
        return
    body = assert_error_shape(response, 415)
    assert body["status"] == "Unsupported Media Type"
    assert "application/json" in body["message"]
    assert (content_type or "no Content-Type") in body["message"]
    assert "errors" not in body
    assert sent_tasks == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.boomerang+json",
    ],
)
def test_json_and_structured_json_types_are_accepted(client, auth, content_type):
    response = client.post("/v1/jobs", data=JOB, headers={**auth, "Content-Type": content_type})

    assert response.status_code == 202, response.get_json()
    assert response.get_json()["input"] == {"text": "hi"}


def test_a_post_without_a_body_needs_no_content_type(client, auth, owner, db_session):
    callback = make_callback(db_session, owner, "http://127.0.0.1:9/hook")

    rotated = client.post(f"/v1/callbacks/{callback.id}/rotate-secret", headers=auth)
    tested = client.post(f"/v1/callbacks/{callback.id}/test", headers=auth)
    empty = client.post(
        f"/v1/callbacks/{callback.id}/enable",
        data="",
        headers={**auth, "Content-Type": "text/plain"},
    )

    assert rotated.status_code == 200
    assert tested.status_code == 202
    assert empty.status_code == 200


def test_a_caller_without_a_key_gets_a_401_before_a_415(client):
    response = client.post("/v1/jobs", data=JOB, headers={"Content-Type": "text/plain"})

    assert_error_shape(response, 401)


def test_an_oversized_body_of_another_type_is_still_a_413(client, auth, settings):
    raw = "x" * (settings.max_request_bytes + 1)

    response = client.post("/v1/jobs", data=raw, headers={**auth, "Content-Type": "text/plain"})

    assert_error_shape(response, 413)


def test_a_chunked_body_of_another_type_is_a_415(client, auth):
    # No Content-Length: the body's size is unknown until it has been read.
    response = client.post(
        "/v1/jobs",
        input_stream=io.BytesIO(JOB.encode()),
        headers={**auth, "Content-Type": "text/plain", "Transfer-Encoding": "chunked"},
    )

    assert response.request.content_length is None
    assert_error_shape(response, 415)
