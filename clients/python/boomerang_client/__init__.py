"""Boomerang's Python client: submit jobs and wait for or stream them, publish events, manage
callbacks and verify the callbacks Boomerang signs.

    from boomerang_client import Boomerang

    with Boomerang("https://boomerang.example.com", api_key) as boomerang:
        job = boomerang.submit("digest", {"url": "https://example.com"})
        done = boomerang.wait(job["id"], timeout=120)
"""

from boomerang_client.aio import AsyncBoomerang, AsyncCallbacks, AsyncEventTypes
from boomerang_client.calls import new_event
from boomerang_client.errors import (
    AuthenticationError,
    BadRequestError,
    BoomerangError,
    ConflictError,
    InvalidSignatureError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    StreamInterrupted,
    ValidationError,
    WaitTimeout,
)
from boomerang_client.models import (
    AcceptedJob,
    Callback,
    CallbackChanges,
    CallbackSecret,
    CallbackSettings,
    CallbackWithSecret,
    Delivery,
    EventType,
    EventTypeChanges,
    Job,
    JobPage,
    JobStatus,
    NewEvent,
    PublishedEvent,
)
from boomerang_client.sse import StreamEvent
from boomerang_client.sync import Boomerang, Callbacks, EventTypes
from boomerang_client.version import __version__
from boomerang_client.webhooks import verify

__all__ = [
    "AcceptedJob",
    "AsyncBoomerang",
    "AsyncCallbacks",
    "AsyncEventTypes",
    "AuthenticationError",
    "BadRequestError",
    "Boomerang",
    "BoomerangError",
    "Callback",
    "CallbackChanges",
    "CallbackSecret",
    "CallbackSettings",
    "CallbackWithSecret",
    "Callbacks",
    "ConflictError",
    "Delivery",
    "EventType",
    "EventTypeChanges",
    "EventTypes",
    "InvalidSignatureError",
    "Job",
    "JobPage",
    "JobStatus",
    "NewEvent",
    "NotFoundError",
    "PayloadTooLargeError",
    "PublishedEvent",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "StreamEvent",
    "StreamInterrupted",
    "ValidationError",
    "WaitTimeout",
    "__version__",
    "new_event",
    "verify",
]
