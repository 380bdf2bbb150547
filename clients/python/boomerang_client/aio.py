"""The asyncio client: the blocking client's operations, awaited. See ``sync.py`` for what each
one does; they take the same arguments and answer the same documents."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Unpack, cast

import httpx

from boomerang_client import calls, models
from boomerang_client.calls import Call, Id
from boomerang_client.errors import ServerError
from boomerang_client.sse import EventParser, Resumption, StreamEvent
from boomerang_client.sync import DEFAULT_TIMEOUT_SECONDS
from boomerang_client.transport import build_request, check, session_headers
from boomerang_client.waiting import LongPoll


class AsyncBoomerang:
    """A tenant's client for asyncio; ``http_client`` may be an httpx.AsyncClient of your own,
    which is then yours to close."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = session_headers(api_key)
        self._http = http_client or httpx.AsyncClient()
        self._owns_http = http_client is None
        self.callbacks = AsyncCallbacks(self)
        self.event_types = AsyncEventTypes(self)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncBoomerang:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- jobs --------------------------------------------------------------------------------------

    async def submit(
        self,
        type: str,
        input: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        *,
        redirect_url: str | None = None,
    ) -> models.AcceptedJob:
        call = calls.submit_job(
            type,
            input,
            callback_url=callback_url,
            redirect_url=redirect_url,
            idempotency_key=idempotency_key,
        )
        return cast(models.AcceptedJob, await self._json(call))

    async def get(self, job_id: Id) -> models.Job:
        return cast(models.Job, await self._json(calls.get_job(job_id)))

    async def wait(self, job_id: Id, timeout: float = 60.0) -> models.Job:
        poll = LongPoll(job_id, timeout)
        while (call := poll.next_call()) is not None:
            poll.record(await self._send(call))
        return poll.outcome()

    async def stream(
        self, job_id: Id, *, last_event_id: str | None = None, reconnects: int = 5
    ) -> AsyncIterator[StreamEvent]:
        resumption = Resumption(last_event_id, reconnects)
        while True:
            try:
                # Closed here, not whenever it is collected: it holds the connection.
                async with contextlib.aclosing(self._stream_once(job_id, resumption)) as events:
                    async for event in events:
                        yield event
                if resumption.ended:
                    return
                delay = resumption.after_failure(None)
            except (httpx.TransportError, ServerError) as exc:
                delay = resumption.after_failure(exc)
            await asyncio.sleep(delay)

    async def _stream_once(
        self, job_id: Id, resumption: Resumption
    ) -> AsyncGenerator[StreamEvent, None]:
        call = calls.job_events(job_id, resumption.last_event_id)
        response = await self._http.send(self._request(call), stream=True)
        parser = EventParser()
        try:
            if response.status_code not in call.operation.success:
                await response.aread()
            check(call, response)
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    resumption.saw(event)
                    yield event
                    if event.ends_stream:
                        return
        finally:
            resumption.advised(parser)
            await response.aclose()

    async def list_jobs(
        self,
        *,
        status: models.JobStatus | None = None,
        type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> models.JobPage:
        call = calls.list_jobs(status=status, job_type=type, limit=limit, cursor=cursor)
        return cast(models.JobPage, await self._json(call))

    # -- events ------------------------------------------------------------------------------------

    async def publish(
        self,
        type: str,
        data: Any,
        *,
        id: str | None = None,
        channels: Iterable[str] | None = None,
        ordering_key: str | None = None,
    ) -> models.PublishedEvent:
        event = calls.new_event(
            type, data, event_id=id, channels=channels, ordering_key=ordering_key
        )
        return cast(models.PublishedEvent, await self._json(calls.publish_event(event)))

    async def publish_batch(self, events: Iterable[models.NewEvent]) -> list[models.PublishedEvent]:
        page = cast(models.PublishedBatch, await self._json(calls.publish_events(events)))
        return page["data"]

    # -- sending -----------------------------------------------------------------------------------

    def _request(self, call: Call) -> httpx.Request:
        return build_request(self._http, call, self.base_url, self._headers, self.timeout)

    async def _send(self, call: Call) -> httpx.Response:
        return check(call, await self._http.send(self._request(call)))

    async def _json(self, call: Call) -> Any:
        return (await self._send(call)).json()


class AsyncCallbacks:
    def __init__(self, client: AsyncBoomerang) -> None:
        self._client = client

    async def create(
        self, url: str, **settings: Unpack[models.CallbackSettings]
    ) -> models.CallbackWithSecret:
        call = calls.create_callback(url, settings)
        return cast(models.CallbackWithSecret, await self._client._json(call))

    async def list(self) -> list[models.Callback]:
        page = cast(models.CallbackList, await self._client._json(calls.list_callbacks()))
        return page["data"]

    async def get(self, callback_id: Id) -> models.Callback:
        return cast(models.Callback, await self._client._json(calls.get_callback(callback_id)))

    async def update(
        self, callback_id: Id, **changes: Unpack[models.CallbackChanges]
    ) -> models.Callback:
        call = calls.update_callback(callback_id, changes)
        return cast(models.Callback, await self._client._json(call))

    async def delete(self, callback_id: Id) -> None:
        await self._client._send(calls.delete_callback(callback_id))

    async def rotate_secret(self, callback_id: Id) -> models.CallbackWithSecret:
        call = calls.rotate_callback_secret(callback_id)
        return cast(models.CallbackWithSecret, await self._client._json(call))

    async def get_secret(self, callback_id: Id) -> models.CallbackSecret:
        call = calls.get_callback_secret(callback_id)
        return cast(models.CallbackSecret, await self._client._json(call))

    async def send_test(self, callback_id: Id) -> models.Delivery:
        call = calls.send_test_callback(callback_id)
        return cast(models.Delivery, await self._client._json(call))

    async def enable(self, callback_id: Id) -> models.Callback:
        call = calls.enable_callback(callback_id)
        return cast(models.Callback, await self._client._json(call))

    async def recover(self, callback_id: Id, since: datetime) -> int:
        call = calls.recover_callback(callback_id, since)
        return cast(models.CallbackRecovered, await self._client._json(call))["recovered"]


class AsyncEventTypes:
    def __init__(self, client: AsyncBoomerang) -> None:
        self._client = client

    async def create(
        self, name: str, *, description: str | None = None, schema: Any = None
    ) -> models.EventType:
        call = calls.create_event_type(name, description=description, schema=schema)
        return cast(models.EventType, await self._client._json(call))

    async def list(self) -> list[models.EventType]:
        page = cast(models.EventTypeList, await self._client._json(calls.list_event_types()))
        return page["data"]

    async def get(self, name: str) -> models.EventType:
        return cast(models.EventType, await self._client._json(calls.get_event_type(name)))

    async def update(
        self, name: str, **changes: Unpack[models.EventTypeChanges]
    ) -> models.EventType:
        call = calls.update_event_type(name, changes)
        return cast(models.EventType, await self._client._json(call))

    async def deprecate(self, name: str) -> models.EventType:
        call = calls.deprecate_event_type(name)
        return cast(models.EventType, await self._client._json(call))
