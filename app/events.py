"""Event vocabulary: the event types, the stable ``webhook-id`` and the envelope body.

Shared by the web (what a callback may subscribe to), the outbox (what is stored) and the
delivery pipeline (what is sent), so none of them has to import another to agree on a name.
"""

from __future__ import annotations

import json
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

# What a callback may subscribe to, and what it gets when it names nothing.
SUBSCRIBABLE_EVENT_TYPES = (
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_PROGRESS,
    CALLBACK_DISABLED,
    CALLBACK_FAILING,
    CALLBACK_RECOVERED,
)
DEFAULT_EVENT_TYPES = (JOB_SUCCEEDED, JOB_FAILED)


def webhook_id(message_id: uuid.UUID) -> str:
    """The ``webhook-id`` header value: stable for a message across retries and destinations."""
    return f"msg_{message_id.hex}"


def render_body(event_type: str, data: Any, now: datetime) -> str:
    """The Standard Webhooks envelope, serialised once so every retry sends the same bytes."""
    envelope = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    return json.dumps(envelope, separators=(",", ":"), default=str)
