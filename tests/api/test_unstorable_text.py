"""Text Postgres and HTTP cannot carry (NUL, lone UTF-16 surrogates) is a 422 naming the field,
wherever it is sent: a job's input (values and keys), a callback's description and headers, on
POST and PATCH, and the query."""

from __future__ import annotations

import json

import hypothesis
import pytest
from hypothesis import strategies as st

from tests.conftest import error_fields

# Any code point, surrogates and NUL included: the class of input the fuzzers must reach.
ANY_TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=12)


def post_json(client, path, body, auth, method="post"):
    # ensure_ascii escapes a lone surrogate as \ud800, as a client's JSON encoder would.
    return getattr(client, method)(
        path, data=json.dumps(body), headers={**auth, "Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "echo", "input": {"note": "a\ud800b"}}, "input"),
        ({"type": "echo", "input": {"k\udfffey": 1}}, "input"),
        ({"type": "echo", "input": {"deep": [{"x": "\ud83d"}]}}, "input"),
        ({"type": "ech\ud800o"}, "type"),
    ],
)
def test_a_lone_surrogate_in_a_job_is_a_422_naming_the_field(client, auth, body, field):
    response = post_json(client, "/v1/jobs", body, auth)
    assert response.status_code == 422
    assert "surrogate" in str(error_fields(response)[field])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": "bad \udc00"}, "description"),
        ({"headers": {"X-Note": "\ud800"}}, "headers"),
        ({"headers": {"X-\ud800": "v"}}, "headers"),
    ],
)
def test_a_lone_surrogate_in_a_callback_is_a_422_on_post_and_patch(client, auth, body, field):
    created = post_json(client, "/v1/callbacks", {"url": "http://127.0.0.1:9/hook"}, auth)
    assert created.status_code == 201
    response = post_json(client, "/v1/callbacks", {"url": "http://127.0.0.1:9/h2", **body}, auth)
    assert response.status_code == 422
    assert field in error_fields(response)
    path = f"/v1/callbacks/{created.get_json()['id']}"
    response = post_json(client, path, body, auth, method="patch")
    assert response.status_code == 422
    assert field in error_fields(response)


def test_the_bytes_of_a_lone_surrogate_in_the_query_do_not_reach_postgres_as_one(client, auth):
    # The UTF-8-style bytes of U+D800; a URL cannot carry the code point itself.
    response = client.get("/v1/jobs?type=a%ED%A0%80", headers=auth)
    assert response.status_code == 200
    assert response.get_json()["data"] == []


@hypothesis.settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(key=ANY_TEXT, value=ANY_TEXT, description=ANY_TEXT, header=ANY_TEXT)
def test_no_text_makes_a_submission_or_a_registration_answer_500(
    client, auth, key, value, description, header
):
    job = post_json(client, "/v1/jobs", {"type": "echo", "input": {key: value}}, auth)
    assert job.status_code in (202, 422)
    callback = post_json(
        client,
        "/v1/callbacks",
        {"url": "http://127.0.0.1:9/hook", "description": description, "headers": {"X-A": header}},
        auth,
    )
    assert callback.status_code in (201, 422)
