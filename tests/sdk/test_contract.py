"""The Python client against the server's own description of itself: the OpenAPI document for
the API, the stream process's routes for the long poll and the event stream."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from boomerang_client import calls
from boomerang_client import operations as ops
from boomerang_client.waiting import MAX_WAIT_SECONDS

from app.stream.server import StreamServer
from tests.sdk.contract import drift


@pytest.fixture
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").get_json()


def test_it_makes_every_operation_as_the_openapi_document_describes_it(spec):
    assert drift(spec, ops.DOCUMENTED) == []


def test_it_notices_when_the_document_renames_adds_or_requires_a_field(spec):
    changed = copy.deepcopy(spec)
    schemas = changed["components"]["schemas"]
    schemas["JobCreate"]["properties"]["callback"] = schemas["JobCreate"]["properties"].pop(
        "callback_url"
    )
    schemas["EventPublish"]["properties"]["tenant"] = {"type": "string"}
    schemas["CallbackCreate"]["required"].append("description")
    schemas["Job"]["properties"].pop("progress")
    del changed["paths"]["/v1/callbacks/{callback_id}/enable"]

    problems = "\n".join(drift(changed, ops.DOCUMENTED))

    assert "POST /v1/jobs: body fields" in problems
    assert "POST /v1/events: body fields" in problems
    # The batch's events are held to the same schema.
    assert "POST /v1/events:batch events: body fields" in problems
    assert "POST /v1/callbacks: required body fields" in problems
    assert "GET /v1/jobs/{job_id} 200: typed fields ['progress']" in problems
    assert "POST /v1/callbacks/{callback_id}/enable: not in the document" in problems


def test_its_long_poll_is_where_the_documented_wait_redirects_with_the_same_limit(spec):
    documented = spec["paths"][ops.GET_JOB.path]["get"]
    (wait,) = [p for p in documented["parameters"] if p["name"] == "wait"]

    assert "307" in documented["responses"]
    assert ops.LONG_POLL.path == "/stream" + ops.GET_JOB.path
    assert ops.LONG_POLL.query is ops.GET_JOB.query
    assert wait["schema"]["maximum"] == MAX_WAIT_SECONDS


def test_its_stream_paths_are_routes_of_the_stream_process(settings, engine):
    router = StreamServer(settings, engine).app().router
    routes = {
        (route.method, route.resource.canonical) for route in router.routes() if route.resource
    }

    for operation in ops.STREAMED:
        assert (operation.method, operation.path) in routes


def test_it_refuses_to_send_what_an_operation_does_not_declare():
    with pytest.raises(TypeError, match="takes no body field"):
        calls.make(ops.SUBMIT_JOB, body={"type": "echo", "priority": 1})
    with pytest.raises(TypeError, match="takes no header"):
        calls.make(ops.GET_JOB, path={"job_id": "x"}, headers={"Idempotency-Key": "k"})


def test_it_keeps_an_id_to_one_path_segment():
    call = calls.get_callback("../../v1/keys")

    assert call.path == "/v1/callbacks/..%2F..%2Fv1%2Fkeys"
