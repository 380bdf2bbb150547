"""The API's documents as typed dictionaries: what the client sends and what it gets back.

They are plain JSON at run time, so a field the server adds later reaches the caller rather than
being dropped. Request documents are named ``New…``, ``…Changes`` and ``…Query``; the others are
answers. The contract tests hold each of them to the OpenAPI document.
"""

# Without ``from __future__ import annotations``: TypedDict tells Required fields apart only
# from evaluated annotations.
from typing import Any, Literal, Required, TypedDict

JobStatus = Literal["queued", "running", "succeeded", "failed"]

# -- jobs ------------------------------------------------------------------------------------------


class NewJob(TypedDict, total=False):
    type: Required[str]
    input: dict[str, Any]
    callback_url: str | None
    redirect_url: str | None


class JobListQuery(TypedDict, total=False):
    status: JobStatus
    type: str
    limit: int
    cursor: str


class JobWaitQuery(TypedDict, total=False):
    wait: int


class Job(TypedDict):
    id: str
    type: str
    status: JobStatus
    input: dict[str, Any]
    result: Any
    error: str | None
    progress: Any
    attempts: int
    callback_url: str | None
    redirect_url: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class AcceptedJob(Job):
    redirect_link: str | None
    stream_url: str


class JobPage(TypedDict):
    data: list[Job]
    next_cursor: str | None


# -- callbacks -------------------------------------------------------------------------------------


class CallbackSettings(TypedDict, total=False):
    """A callback's fields other than its URL, each optional on create and on update; on update,
    ``None`` clears a limit, the retry schedule, the filter or the description."""

    event_types: list[str]
    channels: list[str]
    filter: str | None
    description: str | None
    success_status: int | None
    max_concurrency: int | None
    rate_limit_per_second: float | None
    retry_schedule: list[int] | None
    headers: dict[str, str]
    format: str
    format_version: int


class NewCallback(CallbackSettings, total=False):
    url: Required[str]


class CallbackChanges(CallbackSettings, total=False):
    url: str
    enabled: bool


class RecoverQuery(TypedDict):
    since: str


class Callback(TypedDict):
    id: str
    url: str
    event_types: list[str]
    channels: list[str] | None
    filter: str | None
    description: str | None
    success_status: int | None
    max_concurrency: int | None
    rate_limit_per_second: float | None
    retry_schedule: list[int] | None
    headers: dict[str, str]
    format: str
    format_version: int
    enabled: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str


class CallbackWithSecret(Callback):
    secret: str


class CallbackList(TypedDict):
    data: list[Callback]


class CallbackSecret(TypedDict, total=False):
    secret: Required[str]
    # Only while a rotation's grace period runs.
    previous_secret: str
    previous_secret_expires_at: str


class CallbackRecovered(TypedDict):
    recovered: int


class Delivery(TypedDict):
    id: str
    webhook_id: str
    event_type: str
    job_id: str | None
    callback_id: str | None
    url: str
    status: str
    attempt_count: int
    created_at: str


# -- events and their types ------------------------------------------------------------------------


class NewEvent(TypedDict, total=False):
    type: Required[str]
    data: Required[Any]
    id: str
    channels: list[str]
    ordering_key: str


class NewEventBatch(TypedDict):
    events: list[NewEvent]


class PublishedEvent(TypedDict):
    id: str
    webhook_id: str
    type: str
    channels: list[str] | None
    ordering_key: str | None
    event_id: str | None
    created_at: str
    created: bool
    deliveries: int


class PublishedBatch(TypedDict):
    data: list[PublishedEvent]


class NewEventType(TypedDict, total=False):
    name: Required[str]
    description: str | None
    schema: Any


class EventTypeChanges(TypedDict, total=False):
    description: str | None
    schema: Any


class EventType(TypedDict):
    name: str
    description: str | None
    schema: Any
    deprecated: bool
    deprecated_at: str | None
    created_at: str
    updated_at: str


class EventTypeList(TypedDict):
    data: list[EventType]
