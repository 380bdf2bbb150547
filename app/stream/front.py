"""One origin for the API and the stream process, for ``boomerang up`` and development.

Routes ``/stream/…`` to the stream process and everything else to gunicorn, passing bodies
through as they come (an event stream is forwarded event by event). In production, let the proxy
that terminates TLS do this instead (see the README's nginx example); this exists so that a fresh
machine runs the whole API on one origin with one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict

from app.stream_tokens import STREAM_PREFIX

log = logging.getLogger(__name__)

# Never forwarded in either direction: they describe one connection, not the message.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def is_stream_path(path: str) -> bool:
    return path == STREAM_PREFIX or path.startswith(STREAM_PREFIX + "/")


class Front:
    def __init__(self, web_url: str, stream_url: str) -> None:
        self.web_url = web_url.rstrip("/")
        self.stream_url = stream_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=0)  # gunicorn and the app enforce body limits
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
            # One client forwards every visitor's requests: a cookie the upstream sets belongs to
            # the visitor it answered, never to the next one.
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def _stop(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        upstream = self.stream_url if is_stream_path(request.path) else self.web_url
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in HOP_BY_HOP
        )
        peer = request.remote or ""
        forwarded_for = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
        headers["X-Forwarded-Proto"] = request.scheme
        body = request.content if request.body_exists else None
        try:
            async with self._session.request(
                request.method,
                upstream + request.rel_url.raw_path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason)
                for name, value in answer.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        response.headers.add(name, value)
                # A visitor who has left (aiohttp's reset error is a ClientError too) is no
                # failure of the upstream's: the rest of its answer is dropped, unreported.
                with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                    await response.prepare(request)
                    async for chunk in answer.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                return response
        except aiohttp.ClientError:
            log.warning("front: %s did not answer %s %s", upstream, request.method, request.path)
            return web.json_response(
                {"code": 502, "status": "Bad Gateway", "message": "The upstream did not answer."},
                status=502,
            )


def run(host: str, port: int, web_url: str, stream_url: str) -> None:
    web.run_app(
        Front(web_url, stream_url).app(),
        host=host,
        port=port,
        access_log=None,
        print=None,
        # Every API request passes through here: libuv's loop forwards one for about a fifth
        # less CPU than asyncio's own.
        loop=uvloop.new_event_loop(),
    )
