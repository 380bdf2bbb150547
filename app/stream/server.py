"""The stream process's HTTP face (aiohttp): long poll, per-job event stream, tenant feed.

Everything is under ``/stream`` so that one origin can route that prefix here and the rest to
gunicorn. A browser never holds an API key: it uses the job-scoped token of a ``stream_url``,
and only the origins a tenant listed in ``cors_origins`` get CORS headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import resource
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app import tracing
from app.clock import utcnow
from app.db import make_engine
from app.db_deadline import WARY_SECONDS, install_deadlines
from app.errors import error_body
from app.events import JOB_FAILED, JOB_SUCCEEDED, render_body
from app.models import Tenant
from app.schemas import MAX_WAIT_SECONDS
from app.stream.hub import Hub, job_key, tenant_key
from app.stream.reads import Event, FeedCursor, JobState, Reads
from app.stream_tokens import STREAM_PREFIX, StreamTokens
from config.settings import Settings

log = logging.getLogger(__name__)

# The hub rechecks every waited-on job this often in one query, so a lost announcement delays a
# waiter by at most this much (see app/stream/hub.py).
HUB_RECHECK_SECONDS = 5.0
# Each waiter's own timer is only a backstop, in case the hub's recheck itself fails.
RECHECK_SECONDS = 60.0
# A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
# A client that has not read what was written within this long is dropped: its unread events
# wait in Postgres, not in this process's memory.
WRITE_TIMEOUT_SECONDS = 10.0
FEED_DEFAULT_LIMIT = 100
FEED_MAX_LIMIT = 500
TERMINAL_EVENTS = (JOB_SUCCEEDED, JOB_FAILED)
JOB_STATE_EVENT = "job.state"


class HttpError(Exception):
    def __init__(self, status: int, message: str, errors: Any = None, headers: Any = None):
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    response = web.json_response(body, status=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def invalid_query(field: str, message: str) -> HttpError:
    return HttpError(422, f"Invalid {field}: {message}", {"query": {field: [message]}})


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_query(name, "not a whole number") from None
    if not low <= value <= high:
        raise invalid_query(name, f"must be from {low} to {high}")
    return value


class StreamServer:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        if engine is None:
            # Reads run in threads; a frozen Postgres must not keep them forever.
            install_deadlines(
                settings.database_connect_timeout_seconds,
                settings.statement_timeout_seconds,
                wary_seconds=WARY_SECONDS,
            )
            engine = make_engine(
                settings, settings.statement_timeout_seconds, pool_size=5, max_overflow=5
            )
        self.engine = engine
        self.reads = Reads(self.engine)
        self.hub = Hub(
            settings.redis_url,
            self.reads.job_fingerprints,
            HUB_RECHECK_SECONDS,
            timeout_seconds=settings.redis_timeout_seconds,
        )
        self.tokens = StreamTokens(settings, lambda: Session(self.engine))

    # -- the application ---------------------------------------------------------------------

    def app(self) -> web.Application:
        # Traced, a request's span wraps the error answers too, so it carries the status sent.
        middlewares = [self._traced, self._errors] if tracing.enabled() else [self._errors]
        app = web.Application(middlewares=middlewares)
        app.router.add_get(f"{STREAM_PREFIX}/healthz", self.healthz)
        app.router.add_get(f"{STREAM_PREFIX}/v1/jobs/{{job_id}}", self.long_poll)
        app.router.add_get(f"{STREAM_PREFIX}/v1/jobs/{{job_id}}/events", self.job_events)
        app.router.add_get(f"{STREAM_PREFIX}/v1/events", self.feed)
        app.router.add_route("OPTIONS", f"{STREAM_PREFIX}/v1/jobs/{{job_id}}", self.preflight)
        app.router.add_route(
            "OPTIONS", f"{STREAM_PREFIX}/v1/jobs/{{job_id}}/events", self.preflight
        )
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        await self.hub.start()

    async def _stop(self, _app: web.Application) -> None:
        await self.hub.stop()
        self.engine.dispose()

    @web.middleware
    async def _traced(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # A span per request, a caller's traceparent its parent: a long poll lasts until it is
        # answered, an event stream until it ends.
        matched = request.match_info.route.resource
        route = matched.canonical if matched is not None else request.path
        with tracing.span(
            f"{request.method} {route}",
            parent=request.headers.get("traceparent"),
            kind="server",
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.path,
            },
        ) as span:
            response = await handler(request)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
            return response

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            return json_response(
                exc.status, error_body(exc.status, exc.message, exc.errors), exc.headers
            )
        except web.HTTPException as exc:
            return json_response(exc.status, error_body(exc.status))
        except Exception:
            log.exception("stream: error handling %s %s", request.method, request.path)
            return json_response(503, error_body(503), {"Retry-After": "5"})

    async def _read(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(call, *args)

    # -- who may read what ---------------------------------------------------------------------

    async def _tenant_by_key(self, request: web.Request) -> Tenant | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        return await self._read(self.reads.tenant_by_key, key.strip())

    async def _authorise_job(self, request: web.Request) -> tuple[uuid.UUID, JobState, Tenant]:
        """The job of the path, if the token or API key may read it; else 401 or 404."""
        try:
            job_id = uuid.UUID(request.match_info["job_id"])
        except ValueError:
            raise HttpError(404, "No such job.") from None
        token = request.query.get("token")
        tenant: Tenant | None = None
        if token is not None:
            if await self._read(self.tokens.read, token) != job_id:
                # Forged, expired, or made for another job: nothing about any job is revealed.
                raise HttpError(401, "The token is not valid for this job (or has expired).")
        else:
            tenant = await self._tenant_by_key(request)
            if tenant is None:
                raise HttpError(401, "Send a stream token (?token=) or an API key.")
        state = await self._read(self.reads.job_state, job_id)
        if state is None or (tenant is not None and state.tenant_id != tenant.id):
            raise HttpError(404, "No such job.")
        if tenant is None:
            tenant = await self._read(self.reads.tenant, state.tenant_id)
            if tenant is None:
                raise HttpError(404, "No such job.")
        return job_id, state, tenant

    async def _note_what_is_seen(self, waiter: asyncio.Event, request: web.Request) -> None:
        """Tell the hub the job's fingerprint before the waiter first reads it, so that the
        hub's recheck wakes the waiter for any change after this, announced or not."""
        with contextlib.suppress(ValueError):
            job_id = str(uuid.UUID(request.match_info["job_id"]))
            fingerprints = await self._read(self.reads.job_fingerprints, [job_id])
            self.hub.saw(waiter, fingerprints.get(job_id))

    @staticmethod
    def _cors(request: web.Request, tenant: Tenant) -> dict[str, str]:
        """CORS headers for an origin the tenant listed; none for any other."""
        origin = request.headers.get("Origin")
        headers = {"Vary": "Origin"}
        if origin and origin.lower() in (tenant.cors_origins or ()):
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = "ETag"
        return headers

    async def preflight(self, request: web.Request) -> web.Response:
        """Answer a browser's preflight: allowed only with a valid token and a listed origin."""
        headers: dict[str, str] = {"Vary": "Origin"}
        with contextlib.suppress(HttpError):
            if "token" in request.query:
                _job_id, _state, tenant = await self._authorise_job(request)
                headers = self._cors(request, tenant)
                if "Access-Control-Allow-Origin" in headers:
                    headers["Access-Control-Allow-Methods"] = "GET"
                    headers["Access-Control-Allow-Headers"] = "If-None-Match, Last-Event-ID"
                    headers["Access-Control-Max-Age"] = "600"
        return web.Response(status=204, headers=headers)

    # -- the endpoints -----------------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        return json_response(200, {"status": "ok"})

    async def long_poll(self, request: web.Request) -> web.Response:
        """The job; with ``wait``, once it differs from the ETag in If-None-Match (or 304)."""
        wait = query_int(request, "wait", 0, 0, MAX_WAIT_SECONDS)
        with self.hub.waiting(job_key(request.match_info["job_id"])) as announced:
            await self._note_what_is_seen(announced, request)
            job_id, state, tenant = await self._authorise_job(request)
            seen = request.headers.get("If-None-Match")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while state.etag == seen and (remaining := deadline - loop.time()) > 0:
                announced.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(announced.wait(), min(remaining, RECHECK_SECONDS))
                state = await self._read(self.reads.job_state, job_id) or state
        headers = {"ETag": state.etag, **self._cors(request, tenant)}
        if state.etag == seen:
            return web.Response(status=304, headers={**headers, "Cache-Control": "no-store"})
        return json_response(200, state.document, headers)

    async def job_events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: the state, then each event, closing after the terminal one."""
        with self.hub.waiting(job_key(request.match_info["job_id"])) as announced:
            await self._note_what_is_seen(announced, request)
            job_id, state, tenant = await self._authorise_job(request)
            last_id = request.headers.get("Last-Event-ID") or None
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",  # proxies must pass each event on at once
                    "X-Content-Type-Options": "nosniff",
                    **self._cors(request, tenant),
                }
            )
            await response.prepare(request)
            sse = SseWriter(response)
            if not await sse.send_raw("retry: 2000\n\n"):
                return response
            if last_id is None:
                # The events are read before the state, so none can fall between the two.
                events = await self._read(self.reads.job_events, job_id)
                state = await self._read(self.reads.job_state, job_id) or state
                body = render_body(JOB_STATE_EVENT, state.document, utcnow())
                last_id = events[-1].id if events else None
                if not await sse.send(last_id, JOB_STATE_EVENT, body):
                    return response
                if state.ended:
                    ended = await self._read(self.reads.job_events, job_id)
                    final = [e for e in ended if e.type in TERMINAL_EVENTS][-1:]
                    for event in final:
                        await sse.send_event(event)
                    return response
            elif state.ended:
                # Resumed after the job ended: nothing can follow what is already written, so the
                # stream ends once that is sent, even when the client had the terminal event.
                for event in await self._read(self.reads.job_events, job_id, last_id):
                    if not await sse.send_event(event):
                        break
                return response
            loop = asyncio.get_running_loop()
            # Streams opened together must not all send their heartbeats together: ten thousand
            # writes in one burst hold up the events due in that moment.
            next_heartbeat = loop.time() + HEARTBEAT_SECONDS * random.uniform(0.2, 1.0)
            next_read = loop.time()
            while True:
                # Postgres is read only when woken (or on the backstop timer), never on a
                # heartbeat: an idle stream costs no queries.
                if announced.is_set() or loop.time() >= next_read:
                    announced.clear()
                    for event in await self._read(self.reads.job_events, job_id, last_id):
                        if not await sse.send_event(event):
                            return response
                        last_id = event.id
                        if event.type in TERMINAL_EVENTS:
                            return response
                    next_read = loop.time() + RECHECK_SECONDS
                timeout = max(0.0, min(next_read, next_heartbeat) - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(announced.wait(), timeout)
                if loop.time() >= next_heartbeat:
                    if not await sse.send_raw(": keep-alive\n\n"):
                        return response
                    next_heartbeat = loop.time() + HEARTBEAT_SECONDS

    async def feed(self, request: web.Request) -> web.Response:
        """The tenant's events after ``after`` in commit order; the cursor acknowledges."""
        tenant = await self._tenant_by_key(request)
        if tenant is None:
            raise HttpError(401, "Send your API key as a Bearer token.")
        wait = query_int(request, "wait", 0, 0, MAX_WAIT_SECONDS)
        limit = query_int(request, "limit", FEED_DEFAULT_LIMIT, 1, FEED_MAX_LIMIT)
        raw_types = request.query.get("types")
        types = [t for t in raw_types.split(",") if t] if raw_types else None
        after = request.query.get("after")
        cursor = None
        if after:
            try:
                cursor = FeedCursor.decode(after)
            except ValueError as exc:
                raise invalid_query("after", str(exc)) from None
            retention = timedelta(days=self.settings.retention_days)
            if cursor.expired(utcnow(), retention):
                raise HttpError(
                    410,
                    "This cursor is older than the retention period: events after it may have "
                    "been pruned. Start again without `after`.",
                )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self.hub.waiting(tenant_key(tenant.id)) as announced:
            while True:
                announced.clear()
                events = await self._read(self.reads.feed, tenant.id, cursor, types, limit)
                remaining = deadline - loop.time()
                if events or remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    # The timer also covers events that became readable when an older
                    # transaction ended, which nobody announces.
                    await asyncio.wait_for(announced.wait(), min(remaining, 1.0))
        if events:
            last = events[-1]
            next_cursor: str | None = FeedCursor(last.txid, last.seq, last.created_at).encode()
        else:
            next_cursor = after or None
        return json_response(
            200,
            {
                "data": [
                    {"id": event.id, "type": event.type, "payload": json.loads(event.body)}
                    for event in events
                ],
                "next_cursor": next_cursor,
            },
        )


class SseWriter:
    """Writes events; False once the client is gone or has stopped reading."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    async def send_raw(self, text: str) -> bool:
        try:
            await asyncio.wait_for(self.response.write(text.encode()), WRITE_TIMEOUT_SECONDS)
            return True
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.response.task is not None:
                self.response.force_close()
            return False

    async def send(self, event_id: str | None, event_type: str, body: str) -> bool:
        lines = [f"id: {event_id}"] if event_id else []
        lines += [f"event: {event_type}", f"data: {body}"]
        return await self.send_raw("\n".join(lines) + "\n\n")

    async def send_event(self, event: Event) -> bool:
        return await self.send(event.id, event.type, event.body)


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one where allowed: each open stream holds a
    file descriptor, and the usual soft limit (1,024) is far below what one process can serve."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def collect_garbage_rarely() -> None:
    """Every open stream holds a hundred or so objects the cyclic collector tracks, and a full
    collection scans them all: at ten thousand streams, Python's default thresholds ran one every
    few seconds while streams opened, each pausing every stream for 0.7-1.3 s. Nearly everything
    here is freed by reference counting, so the collector may run far less often."""
    gc.set_threshold(100_000, 50, 100)


def run(settings: Settings) -> None:
    """Serve until stopped (``boomerang stream``)."""
    log.info("stream: up to %d open files", raise_open_files_limit())
    collect_garbage_rarely()
    tracing.configure(settings)
    server = StreamServer(settings)
    web.run_app(
        server.app(),
        host=settings.stream_host,
        port=settings.stream_port,
        access_log=None,
        print=None,
        shutdown_timeout=5,
        # A client that hangs up ends its handler at once, and with it the handler's place among
        # the hub's waiters, rather than at its next heartbeat's failed write.
        handler_cancellation=True,
    )
