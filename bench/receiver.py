"""The benchmark's receiver: an aiohttp server in its own process, keep-alive, many connections.

Every POST is recorded (path, ``webhook-id``, arrival time) and answered by the first segment of
its path:

- ``/fast/...``  201 at once;
- ``/slow/...``  201 after ``--slow-seconds`` (0.5 s);
- ``/hang/...``  never answers: holds the connection until the sender gives up.

The harness reads what arrived from a small control API on the same port:
``GET /_stats?path=P`` (count and unique webhook-ids), ``GET /_records?path=P`` (every
``[webhook_id, arrival_unix_time]``) and ``GET /_health``.

    python -m bench.receiver --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict

from aiohttp import web

HANG_SECONDS = 600.0


class Recorder:
    def __init__(self, slow_seconds: float) -> None:
        self.slow_seconds = slow_seconds
        self.records: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.ids: dict[str, set[str]] = defaultdict(set)

    async def hook(self, request: web.Request) -> web.Response:
        arrived = time.time()
        await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        path = request.path
        self.records[path].append((webhook_id, arrived))
        self.ids[path].add(webhook_id)
        kind = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        if kind == "slow":
            await asyncio.sleep(self.slow_seconds)
        elif kind == "hang":
            await asyncio.sleep(HANG_SECONDS)
        return web.json_response({"ok": True}, status=201)

    async def stats(self, request: web.Request) -> web.Response:
        path = request.query["path"]
        return web.json_response(
            {"count": len(self.records.get(path, ())), "unique": len(self.ids.get(path, ()))}
        )

    async def dump(self, request: web.Request) -> web.Response:
        path = request.query["path"]
        return web.json_response({"records": self.records.get(path, [])})

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def make_app(slow_seconds: float) -> web.Application:
    recorder = Recorder(slow_seconds)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_get("/_stats", recorder.stats)
    app.router.add_get("/_records", recorder.dump)
    app.router.add_get("/_health", recorder.health)
    app.router.add_post("/{tail:.*}", recorder.hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-seconds", type=float, default=0.5)
    args = parser.parse_args()
    web.run_app(
        make_app(args.slow_seconds),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        backlog=2048,
        keepalive_timeout=120,
        print=None,
        shutdown_timeout=1,
    )


if __name__ == "__main__":
    main()
