"""Every HTTP operation the client makes, declared once: method, path, what it may send and what a
success answers with. The clients build their requests from these, and the contract tests hold
them to the server's OpenAPI document, so the two cannot drift apart unnoticed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from boomerang_client import models


@dataclass(frozen=True)
class Operation:
    method: str
    # With ``{name}`` placeholders, as the OpenAPI document writes them.
    path: str
    # The statuses that are a success; any other answer raises.
    success: frozenset[int]
    # TypedDicts: the success body, the JSON body sent, the query parameters sent.
    response: Any = None
    body: Any = None
    query: Any = None
    # Headers the operation reads, which the OpenAPI document does not list.
    headers: frozenset[str] = frozenset()

    def url_path(self, **params: object) -> str:
        # An id is one path segment, whatever it holds: "../keys" must not reach another route.
        return self.path.format(
            **{name: quote(str(value), safe="") for name, value in params.items()}
        )


def _op(method: str, path: str, *success: int, **details: Any) -> Operation:
    return Operation(method, path, frozenset(success), **details)


SUBMIT_JOB = _op(
    "POST",
    "/v1/jobs",
    202,
    200,
    response=models.AcceptedJob,
    body=models.NewJob,
    headers=frozenset({"Idempotency-Key"}),
)
# With ``wait``, a 307 to LONG_POLL.
GET_JOB = _op("GET", "/v1/jobs/{job_id}", 200, response=models.Job, query=models.JobWaitQuery)
LIST_JOBS = _op("GET", "/v1/jobs", 200, response=models.JobPage, query=models.JobListQuery)

PUBLISH_EVENT = _op(
    "POST", "/v1/events", 202, 200, response=models.PublishedEvent, body=models.NewEvent
)
PUBLISH_EVENTS = _op(
    "POST", "/v1/events:batch", 202, response=models.PublishedBatch, body=models.NewEventBatch
)

CREATE_CALLBACK = _op(
    "POST", "/v1/callbacks", 201, response=models.CallbackWithSecret, body=models.NewCallback
)
LIST_CALLBACKS = _op("GET", "/v1/callbacks", 200, response=models.CallbackList)
GET_CALLBACK = _op("GET", "/v1/callbacks/{callback_id}", 200, response=models.Callback)
UPDATE_CALLBACK = _op(
    "PATCH",
    "/v1/callbacks/{callback_id}",
    200,
    response=models.Callback,
    body=models.CallbackChanges,
)
DELETE_CALLBACK = _op("DELETE", "/v1/callbacks/{callback_id}", 204)
ROTATE_CALLBACK_SECRET = _op(
    "POST", "/v1/callbacks/{callback_id}/rotate-secret", 200, response=models.CallbackWithSecret
)
GET_CALLBACK_SECRET = _op(
    "GET", "/v1/callbacks/{callback_id}/secret", 200, response=models.CallbackSecret
)
TEST_CALLBACK = _op("POST", "/v1/callbacks/{callback_id}/test", 202, response=models.Delivery)
ENABLE_CALLBACK = _op("POST", "/v1/callbacks/{callback_id}/enable", 200, response=models.Callback)
RECOVER_CALLBACK = _op(
    "POST",
    "/v1/callbacks/{callback_id}/recover",
    202,
    response=models.CallbackRecovered,
    query=models.RecoverQuery,
)

CREATE_EVENT_TYPE = _op(
    "POST", "/v1/event-types", 201, response=models.EventType, body=models.NewEventType
)
LIST_EVENT_TYPES = _op("GET", "/v1/event-types", 200, response=models.EventTypeList)
GET_EVENT_TYPE = _op("GET", "/v1/event-types/{name}", 200, response=models.EventType)
UPDATE_EVENT_TYPE = _op(
    "PATCH", "/v1/event-types/{name}", 200, response=models.EventType, body=models.EventTypeChanges
)
DEPRECATE_EVENT_TYPE = _op(
    "POST", "/v1/event-types/{name}/deprecate", 200, response=models.EventType
)

# The operations the OpenAPI document describes.
DOCUMENTED: tuple[Operation, ...] = (
    SUBMIT_JOB,
    GET_JOB,
    LIST_JOBS,
    PUBLISH_EVENT,
    PUBLISH_EVENTS,
    CREATE_CALLBACK,
    LIST_CALLBACKS,
    GET_CALLBACK,
    UPDATE_CALLBACK,
    DELETE_CALLBACK,
    ROTATE_CALLBACK_SECRET,
    GET_CALLBACK_SECRET,
    TEST_CALLBACK,
    ENABLE_CALLBACK,
    RECOVER_CALLBACK,
    CREATE_EVENT_TYPE,
    LIST_EVENT_TYPES,
    GET_EVENT_TYPE,
    UPDATE_EVENT_TYPE,
    DEPRECATE_EVENT_TYPE,
)

# Served by the stream process, which the OpenAPI document does not describe. The long poll is
# asked directly rather than through GET_JOB's redirect: one request a poll instead of two, and
# none of them holding a web worker. A 304: the wait ran out with nothing new.
LONG_POLL = _op(
    "GET",
    "/stream/v1/jobs/{job_id}",
    200,
    304,
    response=models.Job,
    query=models.JobWaitQuery,
    headers=frozenset({"If-None-Match"}),
)
JOB_EVENTS = _op(
    "GET", "/stream/v1/jobs/{job_id}/events", 200, headers=frozenset({"Last-Event-ID"})
)
STREAMED: tuple[Operation, ...] = (LONG_POLL, JOB_EVENTS)
