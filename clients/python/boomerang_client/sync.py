"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Unpack, cast

import httpx

from boomerang_client import calls, models
from boomerang_client.calls import Call, Id
from boomerang_client.errors import ServerError
from boomerang_client.sse import EventParser, Resumption, StreamEvent
from boomerang_client.transport import build_request, check, session_headers
from boomerang_client.waiting import LongPoll

DEFAULT_TIMEOUT_SECONDS = 30.0


class Boomerang:
    """A tenant's client. ``base_url`` is the public origin that serves both the API and its
    ``/stream`` paths (``BOOMERANG_PUBLIC_URL``); ``http_client`` may be an httpx.Client of your
    own (proxies, certificates), which is then yours to close."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = session_headers(api_key)
        self._http = http_client or httpx.Client()
        self._owns_http = http_client is None
        self.callbacks = Callbacks(self)
        self.event_types = EventTypes(self)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Boomerang:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- jobs --------------------------------------------------------------------------------------

    def submit(
        self,
        type: str,
        input: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        *,
        redirect_url: str | None = None,
    ) -> models.AcceptedJob:
        """Start a job of ``type``. Its result is POSTed, signed, to ``callback_url`` and to every
        matching callback. With ``idempotency_key``, a repeat of the same request (within 24 h)
        returns the first job; the same key with another body raises ConflictError."""
        call = calls.submit_job(
            type,
            input,
            callback_url=callback_url,
            redirect_url=redirect_url,
            idempotency_key=idempotency_key,
        )
        return cast(models.AcceptedJob, self._json(call))

    def get(self, job_id: Id) -> models.Job:
        """The job as it is now."""
        return cast(models.Job, self._json(calls.get_job(job_id)))

    def wait(self, job_id: Id, timeout: float = 60.0) -> models.Job:
        """The job once it has succeeded or failed, long-polling meanwhile (each change of
        status or progress answers at once). WaitTimeout after ``timeout`` seconds, with the
        job's last state on it."""
        poll = LongPoll(job_id, timeout)
        while (call := poll.next_call()) is not None:
            poll.record(self._send(call))
        return poll.outcome()

    def stream(
        self, job_id: Id, *, last_event_id: str | None = None, reconnects: int = 5
    ) -> Iterator[StreamEvent]:
        """The job's events as they happen: ``job.state`` first (the job as it is), then each
        ``job.progress``, ending after ``job.succeeded`` or ``job.failed``. A connection that
        breaks is resumed after the last event seen, nothing lost, up to ``reconnects`` times
        in a row (then StreamInterrupted, or the transport's error). With ``last_event_id``,
        the events after that one. The connection stays open while the iterator is
        unfinished; close it (or let it go) to end it early."""
        resumption = Resumption(last_event_id, reconnects)
        while True:
            try:
                yield from self._stream_once(job_id, resumption)
                if resumption.ended:
                    return
                delay = resumption.after_failure(None)
            except (httpx.TransportError, ServerError) as exc:
                delay = resumption.after_failure(exc)
            time.sleep(delay)

    def _stream_once(self, job_id: Id, resumption: Resumption) -> Iterator[StreamEvent]:
        call = calls.job_events(job_id, resumption.last_event_id)
        response = self._http.send(self._request(call), stream=True)
        parser = EventParser()
        try:
            if response.status_code not in call.operation.success:
                response.read()
            check(call, response)
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    resumption.saw(event)
                    yield event
                    if event.ends_stream:
                        return
        finally:
            resumption.advised(parser)
            response.close()

    def list_jobs(
        self,
        *,
        status: models.JobStatus | None = None,
        type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> models.JobPage:
        """One page of jobs, newest first; pass its ``next_cursor`` as ``cursor`` for the next."""
        call = calls.list_jobs(status=status, job_type=type, limit=limit, cursor=cursor)
        return cast(models.JobPage, self._json(call))

    # -- events ------------------------------------------------------------------------------------

    def publish(
        self,
        type: str,
        data: Any,
        *,
        id: str | None = None,
        channels: Iterable[str] | None = None,
        ordering_key: str | None = None,
    ) -> models.PublishedEvent:
        """Publish your own event to every callback subscribed to its type. With ``id``, a
        repeat answers with the first message (``created`` false) and sends nothing more."""
        event = calls.new_event(
            type, data, event_id=id, channels=channels, ordering_key=ordering_key
        )
        return cast(models.PublishedEvent, self._json(calls.publish_event(event)))

    def publish_batch(self, events: Iterable[models.NewEvent]) -> list[models.PublishedEvent]:
        """Publish 1 to 100 events in one transaction: all are stored, or none."""
        page = cast(models.PublishedBatch, self._json(calls.publish_events(events)))
        return page["data"]

    # -- sending -----------------------------------------------------------------------------------

    def _request(self, call: Call) -> httpx.Request:
        return build_request(self._http, call, self.base_url, self._headers, self.timeout)

    def _send(self, call: Call) -> httpx.Response:
        return check(call, self._http.send(self._request(call)))

    def _json(self, call: Call) -> Any:
        return self._send(call).json()


class Callbacks:
    """The URLs that hear about your jobs and events (``client.callbacks``)."""

    def __init__(self, client: Boomerang) -> None:
        self._client = client

    def create(
        self, url: str, **settings: Unpack[models.CallbackSettings]
    ) -> models.CallbackWithSecret:
        """Register ``url``; the answer carries its signing ``secret``, shown this once."""
        call = calls.create_callback(url, settings)
        return cast(models.CallbackWithSecret, self._client._json(call))

    def list(self) -> list[models.Callback]:
        page = cast(models.CallbackList, self._client._json(calls.list_callbacks()))
        return page["data"]

    def get(self, callback_id: Id) -> models.Callback:
        return cast(models.Callback, self._client._json(calls.get_callback(callback_id)))

    def update(self, callback_id: Id, **changes: Unpack[models.CallbackChanges]) -> models.Callback:
        """Change the fields given; ``None`` clears a limit, the schedule or the filter."""
        call = calls.update_callback(callback_id, changes)
        return cast(models.Callback, self._client._json(call))

    def delete(self, callback_id: Id) -> None:
        """Delete it; deliveries still waiting for it are cancelled, the log is kept."""
        self._client._send(calls.delete_callback(callback_id))

    def rotate_secret(self, callback_id: Id) -> models.CallbackWithSecret:
        """A new secret; the previous one keeps signing beside it for the grace period."""
        call = calls.rotate_callback_secret(callback_id)
        return cast(models.CallbackWithSecret, self._client._json(call))

    def get_secret(self, callback_id: Id) -> models.CallbackSecret:
        """The signing secret, and the previous one while a rotation's grace period runs."""
        call = calls.get_callback_secret(callback_id)
        return cast(models.CallbackSecret, self._client._json(call))

    def send_test(self, callback_id: Id) -> models.Delivery:
        """Send it a ``callback.test`` event now."""
        call = calls.send_test_callback(callback_id)
        return cast(models.Delivery, self._client._json(call))

    def enable(self, callback_id: Id) -> models.Callback:
        """Re-enable it after it was disabled (by you, by a 410, or after failing for days)."""
        return cast(models.Callback, self._client._json(calls.enable_callback(callback_id)))

    def recover(self, callback_id: Id, since: datetime) -> int:
        """Send again every delivery to it that failed since ``since``; how many."""
        call = calls.recover_callback(callback_id, since)
        return cast(models.CallbackRecovered, self._client._json(call))["recovered"]


class EventTypes:
    """Your catalogue of event types (``client.event_types``): an event is published only under
    a type in it, unless the tenant allows uncatalogued types."""

    def __init__(self, client: Boomerang) -> None:
        self._client = client

    def create(
        self, name: str, *, description: str | None = None, schema: Any = None
    ) -> models.EventType:
        """Add ``name``; with ``schema`` (JSON Schema 2020-12), every event's ``data`` must meet
        it."""
        call = calls.create_event_type(name, description=description, schema=schema)
        return cast(models.EventType, self._client._json(call))

    def list(self) -> list[models.EventType]:
        page = cast(models.EventTypeList, self._client._json(calls.list_event_types()))
        return page["data"]

    def get(self, name: str) -> models.EventType:
        return cast(models.EventType, self._client._json(calls.get_event_type(name)))

    def update(self, name: str, **changes: Unpack[models.EventTypeChanges]) -> models.EventType:
        """Change the description and/or the schema (``None`` removes it)."""
        call = calls.update_event_type(name, changes)
        return cast(models.EventType, self._client._json(call))

    def deprecate(self, name: str) -> models.EventType:
        """Mark it deprecated; its events are still published and delivered."""
        return cast(models.EventType, self._client._json(calls.deprecate_event_type(name)))
