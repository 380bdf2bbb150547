"""Server-Sent Events as a job's event stream sends them, parsed line by line so that the sync
and async clients share the parser and differ only in how they read lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from boomerang_client.errors import StreamInterrupted
from boomerang_client.models import Job

JOB_STATE = "job.state"
TERMINAL = frozenset({"job.succeeded", "job.failed"})
# Until the server advises otherwise (it does, first thing).
DEFAULT_RECONNECT_SECONDS = 2.0


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's stream. ``payload`` is the envelope a callback would get
    (``{"type", "timestamp", "data"}``); ``id`` is its webhook-id, to resume after with
    ``last_event_id``."""

    id: str | None
    type: str
    payload: Any

    @property
    def job(self) -> Job:
        """The job as the event shows it (every job event carries it as ``data``)."""
        return cast(Job, self.payload["data"])

    @property
    def ends_stream(self) -> bool:
        """Whether this is the job's last event: it succeeded or failed."""
        return self.type in TERMINAL


class EventParser:
    """Feed it the stream's lines (without their line endings); it returns each event as its
    closing blank line arrives."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}
        self._data: list[str] = []
        # The server's advice on how long to wait before reconnecting, once it gave one.
        self.retry_seconds: float | None = None

    def feed(self, line: str) -> StreamEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):  # a heartbeat
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name in ("id", "event"):
            self._fields[name] = value
        elif name == "retry" and value.isdigit():
            self.retry_seconds = int(value) / 1000
        return None

    def _dispatch(self) -> StreamEvent | None:
        fields, data = self._fields, self._data
        self._fields, self._data = {}, []
        if not data:  # e.g. the ``retry:`` advice, which carries no event
            return None
        payload = json.loads("\n".join(data))
        return StreamEvent(fields.get("id") or None, fields.get("event", "message"), payload)


class Resumption:
    """Where a job's stream is, across reconnections: the last event id to resume after, and
    how many reconnections in a row have failed. Any event received resets the count."""

    def __init__(self, last_event_id: str | None, reconnects: int) -> None:
        self.last_event_id = last_event_id
        self.reconnects = reconnects
        self.ended = False
        self.delay = DEFAULT_RECONNECT_SECONDS
        self._failures = 0

    def saw(self, event: StreamEvent) -> None:
        if event.id is not None:
            self.last_event_id = event.id
        self.ended = event.ends_stream
        self._failures = 0

    def advised(self, parser: EventParser) -> None:
        if parser.retry_seconds is not None:
            self.delay = parser.retry_seconds

    def after_failure(self, error: Exception | None) -> float:
        """Seconds to wait before reconnecting after ``error`` (None: the connection closed
        before the job's last event); raises once the reconnections are used up."""
        self._failures += 1
        if self._failures > self.reconnects:
            raise error or StreamInterrupted(self.last_event_id)
        return self.delay
