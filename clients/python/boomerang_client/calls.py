"""What to send for each operation, apart from how it is sent: the sync and async clients make
the same calls, each over its own httpx client."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from boomerang_client import models
from boomerang_client import operations as ops
from boomerang_client.operations import Operation

Id = str | uuid.UUID

# The stream process writes a comment at least every 15 s, so a silence longer than this on an
# open event stream is a dead connection.
STREAM_SILENCE_SECONDS = 20.0


@dataclass(frozen=True)
class Call:
    operation: Operation
    path: str
    query: Mapping[str, Any] | None = None
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # How long the server may hold its answer back on purpose (a long poll's wait, the gap
    # between a stream's heartbeats), on top of the client's own timeout.
    holds: float = 0.0


def make(
    operation: Operation,
    *,
    path: Mapping[str, object] | None = None,
    query: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    holds: float = 0.0,
) -> Call:
    """A call of ``operation``. Sending a field, parameter or header it does not declare is a
    TypeError here, so the declarations the contract tests check are the whole truth."""
    _only_declared("body field", body, _keys(operation.body), operation)
    _only_declared("query parameter", query, _keys(operation.query), operation)
    _only_declared("header", headers, operation.headers, operation)
    return Call(
        operation,
        operation.url_path(**(path or {})),
        {name: value for name, value in (query or {}).items() if value is not None} or None,
        body,
        dict(headers or {}),
        holds,
    )


def _keys(model: Any) -> frozenset[str]:
    if model is None:
        return frozenset()
    return frozenset(model.__required_keys__ | model.__optional_keys__)


def _only_declared(
    what: str, sent: Mapping[str, Any] | None, declared: frozenset[str], operation: Operation
) -> None:
    unknown = sorted(set(sent or ()) - declared)
    if unknown:
        raise TypeError(f"{operation.method} {operation.path} takes no {what} {unknown}")


# -- jobs ------------------------------------------------------------------------------------------


def submit_job(
    job_type: str,
    job_input: Mapping[str, Any] | None,
    *,
    callback_url: str | None,
    redirect_url: str | None,
    idempotency_key: str | None,
) -> Call:
    body: models.NewJob = {"type": job_type, "input": dict(job_input or {})}
    if callback_url is not None:
        body["callback_url"] = callback_url
    if redirect_url is not None:
        body["redirect_url"] = redirect_url
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    return make(ops.SUBMIT_JOB, body=body, headers=headers)


def get_job(job_id: Id) -> Call:
    return make(ops.GET_JOB, path={"job_id": job_id})


def long_poll(job_id: Id, wait: int, etag: str | None) -> Call:
    query: models.JobWaitQuery = {"wait": wait}
    headers = {"If-None-Match": etag} if etag is not None else {}
    return make(ops.LONG_POLL, path={"job_id": job_id}, query=query, headers=headers, holds=wait)


def list_jobs(
    *, status: models.JobStatus | None, job_type: str | None, limit: int | None, cursor: str | None
) -> Call:
    query = {"status": status, "type": job_type, "limit": limit, "cursor": cursor}
    return make(ops.LIST_JOBS, query=query)


def job_events(job_id: Id, last_event_id: str | None) -> Call:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    return make(
        ops.JOB_EVENTS, path={"job_id": job_id}, headers=headers, holds=STREAM_SILENCE_SECONDS
    )


# -- events ----------------------------------------------------------------------------------------


def new_event(
    event_type: str,
    data: Any,
    *,
    event_id: str | None = None,
    channels: Iterable[str] | None = None,
    ordering_key: str | None = None,
) -> models.NewEvent:
    """One event to publish, as ``publish`` takes it and ``publish_batch`` takes a list of."""
    event: models.NewEvent = {"type": event_type, "data": data}
    if event_id is not None:
        event["id"] = event_id
    if channels is not None:
        event["channels"] = list(channels)
    if ordering_key is not None:
        event["ordering_key"] = ordering_key
    return event


def publish_event(event: models.NewEvent) -> Call:
    return make(ops.PUBLISH_EVENT, body=event)


def publish_events(events: Iterable[models.NewEvent]) -> Call:
    batch: models.NewEventBatch = {"events": list(events)}
    return make(ops.PUBLISH_EVENTS, body=batch)


# -- callbacks -------------------------------------------------------------------------------------


def create_callback(url: str, settings: models.CallbackSettings) -> Call:
    body: models.NewCallback = {"url": url, **settings}
    return make(ops.CREATE_CALLBACK, body=body)


def list_callbacks() -> Call:
    return make(ops.LIST_CALLBACKS)


def get_callback(callback_id: Id) -> Call:
    return make(ops.GET_CALLBACK, path={"callback_id": callback_id})


def update_callback(callback_id: Id, changes: models.CallbackChanges) -> Call:
    return make(ops.UPDATE_CALLBACK, path={"callback_id": callback_id}, body=changes)


def delete_callback(callback_id: Id) -> Call:
    return make(ops.DELETE_CALLBACK, path={"callback_id": callback_id})


def rotate_callback_secret(callback_id: Id) -> Call:
    return make(ops.ROTATE_CALLBACK_SECRET, path={"callback_id": callback_id})


def get_callback_secret(callback_id: Id) -> Call:
    return make(ops.GET_CALLBACK_SECRET, path={"callback_id": callback_id})


def send_test_callback(callback_id: Id) -> Call:
    return make(ops.TEST_CALLBACK, path={"callback_id": callback_id})


def enable_callback(callback_id: Id) -> Call:
    return make(ops.ENABLE_CALLBACK, path={"callback_id": callback_id})


def recover_callback(callback_id: Id, since: datetime) -> Call:
    if since.tzinfo is None:
        # The server would refuse it; a naive time is ambiguous here just as there.
        raise ValueError("since must be timezone-aware")
    query: models.RecoverQuery = {"since": since.isoformat()}
    return make(ops.RECOVER_CALLBACK, path={"callback_id": callback_id}, query=query)


# -- event types -----------------------------------------------------------------------------------


def create_event_type(name: str, *, description: str | None, schema: Any) -> Call:
    body: models.NewEventType = {"name": name}
    if description is not None:
        body["description"] = description
    if schema is not None:
        body["schema"] = schema
    return make(ops.CREATE_EVENT_TYPE, body=body)


def list_event_types() -> Call:
    return make(ops.LIST_EVENT_TYPES)


def get_event_type(name: str) -> Call:
    return make(ops.GET_EVENT_TYPE, path={"name": name})


def update_event_type(name: str, changes: models.EventTypeChanges) -> Call:
    return make(ops.UPDATE_EVENT_TYPE, path={"name": name}, body=changes)


def deprecate_event_type(name: str) -> Call:
    return make(ops.DEPRECATE_EVENT_TYPE, path={"name": name})
