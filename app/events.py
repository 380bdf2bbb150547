"""Event vocabulary: the event types, the stable ``webhook-id`` and the envelope body.

Shared by the web (what a callback may subscribe to), the outbox (what is stored) and the
delivery pipeline (what is sent), so none of them has to import another to agree on a name.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

JOB_SUCCEEDED = "job.succeeded"
JOB_FAILED = "job.failed"
JOB_PROGRESS = "job.progress"
CALLBACK_TEST = "callback.test"
CALLBACK_DISABLED = "callback.disabled"
CALLBACK_FAILING = "callback.failing"
CALLBACK_RECOVERED = "callback.recovered"
DELIVERY_EXHAUSTED = "delivery.exhausted"

# What a callback may subscribe to, and what it gets when it names nothing.
SUBSCRIBABLE_EVENT_TYPES = (
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_PROGRESS,
    CALLBACK_DISABLED,
    CALLBACK_FAILING,
    CALLBACK_RECOVERED,
    DELIVERY_EXHAUSTED,
)
DEFAULT_EVENT_TYPES = (JOB_SUCCEEDED, JOB_FAILED)

# A type anyone publishes (``invoice.paid``): dot-separated segments of lower-case letters,
# digits, ``_`` and ``-``, as long as the message table's column allows.
EVENT_TYPE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
MAX_EVENT_TYPE_LENGTH = 100
# Boomerang's own events: nobody publishes under these, and a callback names only the ones that
# exist (a typo like ``job.succeded`` would otherwise never match anything, silently).
RESERVED_PREFIXES = ("job.", "callback.", "delivery.")
# Channels narrow who hears an event (``tenant-42``, ``eu``): letters, digits and ``_.:-``.
CHANNEL = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_CHANNELS = 10
# ``invoice.*`` subscribes to every type under ``invoice.``, at any depth.
WILDCARD_SUFFIX = ".*"


def publishable_problem(event_type: str) -> str | None:
    """Why a tenant may not publish ``event_type``, or None."""
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        return f"must be at most {MAX_EVENT_TYPE_LENGTH} characters"
    if not EVENT_TYPE.fullmatch(event_type):
        return (
            "must be dot-separated segments of lower-case letters, digits, '_' and '-' "
            "(like invoice.paid)"
        )
    if event_type.startswith(RESERVED_PREFIXES):
        return f"{', '.join(p + '*' for p in RESERVED_PREFIXES)} are Boomerang's own events"
    return None


def channels_problem(channels: list[str]) -> str | None:
    """Why a list of channels (an event's or a callback's) is refused, or None."""
    if len(channels) > MAX_CHANNELS:
        return f"at most {MAX_CHANNELS} channels"
    bad = next((channel for channel in channels if not CHANNEL.fullmatch(channel)), None)
    if bad is not None:
        return f"{bad!r} is not a channel: 1 to 128 letters, digits, '_', '.', ':' or '-'"
    return None


def subscription_problem(pattern: str) -> str | None:
    """Why a callback may not subscribe to ``pattern`` (a type or ``prefix.*``), or None."""
    if pattern in SUBSCRIBABLE_EVENT_TYPES:
        return None
    name = pattern.removesuffix(WILDCARD_SUFFIX)
    if len(pattern) > MAX_EVENT_TYPE_LENGTH or not EVENT_TYPE.fullmatch(name):
        return (
            f"{pattern!r} is not an event type (dot-separated segments of lower-case letters, "
            "digits, '_' and '-') or a prefix.* wildcard"
        )
    if name != pattern:
        return None  # job.* and callback.* are fine: they name only events that exist
    if pattern.startswith(RESERVED_PREFIXES):
        own = ", ".join(SUBSCRIBABLE_EVENT_TYPES)
        return f"unknown event type {pattern!r}; Boomerang's own are {own}"
    return None


def webhook_id(message_id: uuid.UUID) -> str:
    """The ``webhook-id`` header value: stable for a message across retries and destinations."""
    return f"msg_{message_id.hex}"


def render_body(event_type: str, data: Any, now: datetime, ordering_key: str | None = None) -> str:
    """The Standard Webhooks envelope, serialised once so every retry sends the same bytes; a
    published event's ordering key goes along so its receiver can tell the sequences apart."""
    envelope: dict[str, Any] = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    if ordering_key is not None:
        envelope["ordering_key"] = ordering_key
    return json.dumps(envelope, separators=(",", ":"), default=str)
