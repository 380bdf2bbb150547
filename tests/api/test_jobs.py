"""/v1/jobs: submit work, replay it safely, list and poll it."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import pytest

from app.models import Job, JobStatus
from tests.api.conftest import run_job, submit_job
from tests.conftest import error_fields
from tests.factories import make_job

JOB_KEYS = {
    "id",
    "type",
    "status",
    "input",
    "result",
    "error",
    "progress",
    "attempts",
    "callback_url",
    "redirect_url",
    "created_at",
    "started_at",
    "finished_at",
}


def post_json(client, auth, raw: str, **headers):
    return client.post(
        "/v1/jobs", data=raw, headers={**auth, "Content-Type": "application/json", **headers}
    )


def job_tasks(sent_tasks):
    return [t for t in sent_tasks if t.name == "boomerang.run_jobs"]


# Submit ------------------------------------------------------------------------------------------


def test_it_accepts_a_job_with_202_a_location_and_one_jobs_wake_after_commit(
    client, auth, db_session, sent_tasks
):
    response = client.post(
        "/v1/jobs", json={"type": "echo", "input": {"hello": "world"}}, headers=auth
    )

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == JOB_KEYS | {"redirect_link", "stream_url"}
    assert response.headers["Location"] == f"/v1/jobs/{body['id']}"
    assert body["type"] == "echo"
    assert body["status"] == "queued"
    assert body["input"] == {"hello": "world"}
    assert body["result"] is None
    assert body["attempts"] == 0
    assert body["redirect_link"] is None
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    # A wake with no id: which job to run is Postgres's to say.
    assert [(t.name, t.args, t.queue) for t in sent_tasks] == [("boomerang.run_jobs", (), "jobs")]
    stored = db_session.get(Job, uuid.UUID(body["id"]))
    assert stored.status == JobStatus.QUEUED
    assert stored.input == {"hello": "world"}


def test_the_input_defaults_to_an_empty_object(client, auth):
    assert submit_job(client, auth)["input"] == {}


def test_the_location_answers_with_the_job(client, auth):
    response = client.post("/v1/jobs", json={"type": "echo"}, headers=auth)

    polled = client.get(response.headers["Location"], headers=auth)

    assert polled.status_code == 200
    assert set(polled.get_json()) == JOB_KEYS
    assert polled.get_json()["id"] == response.get_json()["id"]
    assert polled.get_json()["status"] == "queued"


def test_a_callback_url_query_parameter_is_stored_as_the_callback_url(client, auth, db_session):
    response = client.post(
        "/v1/jobs",
        query_string={"callbackURL": "http://127.0.0.1:9/done?order=7"},
        json={"type": "echo"},
        headers=auth,
    )

    assert response.status_code == 202
    assert response.get_json()["callback_url"] == "http://127.0.0.1:9/done?order=7"
    stored = db_session.get(Job, uuid.UUID(response.get_json()["id"]))
    assert stored.callback_url == "http://127.0.0.1:9/done?order=7"


def test_a_callback_url_in_the_body_and_a_different_one_in_the_query_is_a_422(
    client, auth, sent_tasks
):
    response = client.post(
        "/v1/jobs",
        query_string={"callbackURL": "http://127.0.0.1:9/query"},
        json={"type": "echo", "callback_url": "http://127.0.0.1:9/body"},
        headers=auth,
    )
    assert response.status_code == 422
    assert "conflicts" in response.get_json()["errors"]["query"]["callbackURL"][0]
    assert job_tasks(sent_tasks) == []


def test_the_same_callback_url_in_the_body_and_the_query_is_accepted(client, auth):
    response = client.post(
        "/v1/jobs",
        query_string={"callbackURL": "http://127.0.0.1:9/hook"},
        json={"type": "echo", "callback_url": "http://127.0.0.1:9/hook"},
        headers=auth,
    )
    assert response.status_code == 202
    assert response.get_json()["callback_url"] == "http://127.0.0.1:9/hook"


def test_it_rejects_an_unknown_job_type(client, auth, sent_tasks):
    response = client.post("/v1/jobs", json={"type": "mine-bitcoin"}, headers=auth)

    assert response.status_code == 422
    (message,) = error_fields(response)["type"]
    assert "echo" in message  # it lists the types that exist
    assert sent_tasks == []


def test_it_rejects_a_job_without_a_type(client, auth):
    response = client.post("/v1/jobs", json={"input": {}}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["type"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", 5),
        ("type", ""),
        ("input", [1, 2]),
        ("input", "text"),
        ("input", None),
        ("callback_url", 5),
        ("redirect_url", ["http://127.0.0.1:9/"]),
        ("status", "succeeded"),
    ],
)
def test_it_rejects_a_field_of_the_wrong_type(client, auth, sent_tasks, field, value):
    response = client.post("/v1/jobs", json={"type": "echo", field: value}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == [field]
    assert sent_tasks == []


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://x", "http://", "http://user:pw@127.0.0.1/hook"]
)
def test_it_rejects_an_invalid_callback_url(client, auth, url):
    response = client.post("/v1/jobs", json={"type": "echo", "callback_url": url}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["callback_url"]


@pytest.mark.parametrize("url", ["not a url", "ftp://x"])
def test_it_rejects_an_invalid_callback_url_query_parameter(client, auth, url):
    response = client.post(
        "/v1/jobs", query_string={"callbackURL": url}, json={"type": "echo"}, headers=auth
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["callbackURL"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "echo", "input": {"x": NaN}}',
        '{"type": "echo", "input": {"x": [Infinity]}}',
        '{"type": "echo", "input": {"x": 1e999}}',
        '{"type": "echo", "input": {"x": "a\\u0000b"}}',
        '{"type": "echo", "input": {"a\\u0000b": 1}}',
    ],
)
def test_it_rejects_input_that_json_storage_cannot_hold(client, auth, sent_tasks, raw):
    response = post_json(client, auth, raw)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["input"]
    assert sent_tasks == []


def test_its_argument_schemas_are_built_once_not_on_every_request(client, auth, monkeypatch):
    from app.schemas import JobCreateQuerySchema, JobCreateSchema

    built: list[type] = []
    for schema in (JobCreateSchema, JobCreateQuerySchema):
        original = schema.__init__

        def counting(self, *args, _original=original, _schema=schema, **kwargs):
            if type(self) is _schema:
                built.append(_schema)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(schema, "__init__", counting)
    for n in range(3):
        submit_job(client, auth, input={"n": n})
    # Built by the first of these requests, or by an earlier one in this process: never again.
    assert len(built) <= 2 and len(set(built)) == len(built)
    response = post_json(client, auth, '{"type": "echo", "input": 7}')
    assert response.status_code == 422 and "input" in error_fields(response)


def test_it_rejects_input_nested_too_deeply(client, auth):
    depth = 500
    response = post_json(
        client, auth, '{"type": "echo", "input": {"x": ' + "[" * depth + "]" * depth + "}}"
    )
    assert response.status_code == 422
    (message,) = error_fields(response)["input"]
    assert "nest" in message


def test_it_accepts_input_nested_a_reasonable_depth(client, auth):
    depth = 50
    response = post_json(
        client, auth, '{"type": "echo", "input": {"x": ' + "[" * depth + "]" * depth + "}}"
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "echo", "input": {"x": ' + "9" * 5000 + "}}",
        '{"type": "echo", "input": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=["a-5000-digit-number", "nesting-the-decoder-cannot-follow"],
)
def test_json_the_decoder_refuses_is_a_400_not_a_500(client, auth, raw):
    response = post_json(client, auth, raw)
    assert response.status_code == 400
    assert response.get_json()["errors"] == {"json": ["Invalid JSON body."]}


# Idempotency -------------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_returns_the_first_job_with_200(client, auth, sent_tasks):
    headers = {**auth, "Idempotency-Key": "order-1"}
    first = client.post("/v1/jobs", json={"type": "echo", "input": {"n": 1}}, headers=headers)

    again = client.post("/v1/jobs", json={"type": "echo", "input": {"n": 1}}, headers=headers)

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert len(job_tasks(sent_tasks)) == 1
    assert len(client.get("/v1/jobs", headers=auth).get_json()["data"]) == 1


def test_the_same_idempotency_key_with_a_different_body_is_a_conflict(client, auth, sent_tasks):
    headers = {**auth, "Idempotency-Key": "order-1"}
    client.post("/v1/jobs", json={"type": "echo", "input": {"n": 1}}, headers=headers)

    response = client.post("/v1/jobs", json={"type": "echo", "input": {"n": 2}}, headers=headers)

    assert response.status_code == 409
    body = response.get_json()
    assert body["code"] == 409
    assert body["status"] == "Conflict"
    assert "Idempotency-Key" in body["message"]
    assert len(job_tasks(sent_tasks)) == 1


def test_a_different_idempotency_key_makes_a_new_job(client, auth):
    first = submit_job(client, auth)
    response = client.post(
        "/v1/jobs", json={"type": "echo"}, headers={**auth, "Idempotency-Key": "another"}
    )
    assert response.status_code == 202
    assert response.get_json()["id"] != first["id"]


def test_idempotency_keys_are_per_tenant(client, auth, other_auth):
    ours = client.post("/v1/jobs", json={"type": "echo"}, headers={**auth, "Idempotency-Key": "k"})
    theirs = client.post(
        "/v1/jobs", json={"type": "echo"}, headers={**other_auth, "Idempotency-Key": "k"}
    )
    assert ours.status_code == theirs.status_code == 202
    assert ours.get_json()["id"] != theirs.get_json()["id"]


@pytest.mark.parametrize("key", ["", "k" * 256, "a\x00b"])
def test_it_rejects_an_unusable_idempotency_key(client, auth, sent_tasks, key):
    response = client.post(
        "/v1/jobs", json={"type": "echo"}, headers={**auth, "Idempotency-Key": key}
    )
    assert response.status_code == 422
    assert list(error_fields(response)) == ["Idempotency-Key"]
    assert sent_tasks == []


# List --------------------------------------------------------------------------------------------


def test_it_lists_only_the_tenants_jobs_newest_first(client, auth, other_auth):
    first = submit_job(client, auth)
    second = submit_job(client, auth, type="sleep")
    submit_job(client, other_auth)

    response = client.get("/v1/jobs", headers=auth)

    assert response.status_code == 200
    body = response.get_json()
    assert [j["id"] for j in body["data"]] == [second["id"], first["id"]]
    assert body["next_cursor"] is None
    assert set(body["data"][0]) == JOB_KEYS


def test_cursor_pagination_walks_every_job_once(client, auth, db_session, owner):
    # Made in one transaction, these share created_at: the id must break the tie.
    made = {str(make_job(db_session, owner).id) for _ in range(5)}
    made.add(submit_job(client, auth)["id"])

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/jobs", query_string=query, headers=auth)
        assert response.status_code == 200
        body = response.get_json()
        assert len(body["data"]) <= 2
        seen += [j["id"] for j in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert len(seen) == len(set(seen)) == 6
    assert set(seen) == made


def test_it_filters_by_status(client, auth, db_session, owner):
    done = make_job(db_session, owner, status=JobStatus.SUCCEEDED)
    make_job(db_session, owner, status=JobStatus.QUEUED)
    make_job(db_session, owner, status=JobStatus.FAILED)

    response = client.get("/v1/jobs", query_string={"status": "succeeded"}, headers=auth)

    assert [j["id"] for j in response.get_json()["data"]] == [str(done.id)]


def test_it_filters_by_type(client, auth, db_session, owner):
    digest = make_job(db_session, owner, "digest", {"text": "hi"})
    make_job(db_session, owner, "echo")

    response = client.get("/v1/jobs", query_string={"type": "digest"}, headers=auth)

    assert [j["id"] for j in response.get_json()["data"]] == [str(digest.id)]


def test_it_filters_by_status_and_type_together(client, auth, db_session, owner):
    wanted = make_job(db_session, owner, "echo", status=JobStatus.FAILED)
    make_job(db_session, owner, "echo", status=JobStatus.SUCCEEDED)
    make_job(db_session, owner, "fail", status=JobStatus.FAILED)

    response = client.get(
        "/v1/jobs", query_string={"status": "failed", "type": "echo"}, headers=auth
    )

    assert [j["id"] for j in response.get_json()["data"]] == [str(wanted.id)]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        base64.urlsafe_b64encode(b"yesterday|nobody").decode(),
        base64.urlsafe_b64encode(b"2024-01-01T00:00:00+00:00|not-a-uuid").decode(),
        "\u00e9t\u00e9",
    ],
)
def test_a_tampered_cursor_is_a_422_naming_cursor(client, auth, cursor):
    response = client.get("/v1/jobs", query_string={"cursor": cursor}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == ["cursor"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("limit", 0), ("limit", 201), ("limit", "ten"), ("status", "done"), ("type", "a\x00b")],
)
def test_it_rejects_an_invalid_list_parameter(client, auth, field, value):
    response = client.get("/v1/jobs", query_string={field: value}, headers=auth)
    assert response.status_code == 422
    assert list(error_fields(response)) == [field]


# One job -----------------------------------------------------------------------------------------


def test_polling_a_finished_job_shows_its_result(client, auth, db_session, settings):
    job = submit_job(client, auth, input={"answer": 42})
    assert run_job(db_session, settings, job["id"]) is True

    response = client.get(f"/v1/jobs/{job['id']}", headers=auth)

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "succeeded"
    assert body["result"] == {"answer": 42}
    assert body["attempts"] == 1
    assert body["started_at"] is not None
    assert body["finished_at"] is not None


def test_polling_a_failed_job_shows_its_error(client, auth, db_session, settings):
    job = submit_job(client, auth, type="fail", input={"message": "out of paper"})
    assert run_job(db_session, settings, job["id"]) is False

    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).get_json()

    assert body["status"] == "failed"
    assert body["result"] is None
    assert "out of paper" in body["error"]


def test_another_tenants_job_is_not_found(client, auth, other_auth):
    theirs = submit_job(client, other_auth)

    response = client.get(f"/v1/jobs/{theirs['id']}", headers=auth)

    assert response.status_code == 404
    assert response.get_json()["message"] == "No such job."
    assert client.get(f"/v1/jobs/{theirs['id']}", headers=other_auth).status_code == 200


def test_an_unknown_job_is_not_found(client, auth):
    response = client.get(f"/v1/jobs/{uuid.uuid4()}", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["code"] == 404
