"""A receiver for multi-host tests: its own process (in its own network namespace), which records
what every host sent it and answers as it is told.

    python -m tests.support.fleet_receiver --host 10.231.17.2 --port 9000

Every POST is recorded with its arrival time, path, ``webhook-id``, the job id in its body
(``data.id``), the sender's address (so a test knows which host sent it) and the status it got.
Per path it also keeps the most requests it ever had in flight at once and the arrivals in each
second, which is what a test of per-callback limits across hosts reads.

The control API, on the same port (``FleetReceiver`` is its client):

- ``GET /_stats?path=P``: ``{"count", "accepted", "unique", "duplicates", "in_flight",
  "peak_in_flight", "busiest_second", "per_second": {"<epoch second>": n}, "by_host":
  {"<address>": n}}``; without ``path``, over every path. ``peak_in_flight`` is the most
  requests held at once (for several paths, the largest of theirs); ``busiest_second`` the most
  arrivals in any one-second window, as ``app.receiver.busiest_second`` counts them.
- ``GET /_records?path=P``: ``{"records": [{"at", "answered_at", "path", "webhook_id",
  "job_id", "host", "status"}]}`` in arrival order (``answered_at`` is 0 while held).
- ``POST /_behave`` with ``{"path", "delay_seconds", "status", "status_seconds",
  "fail_first"}``: from now on requests to ``path`` (or, for a path ending in ``/``, under it)
  wait ``delay_seconds`` and answer ``status`` for ``status_seconds`` (then 200; without it,
  always), and each webhook-id's first ``fail_first`` requests get 500 (an error that, unlike
  503, does not tell the sender to slow down).
- ``POST /_reset``: forget every record and behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from app.receiver import Received, busiest_second
from tests.support import BIN
from tests.support.processes import start_process, stop_process


@dataclass
class Behaviour:
    """How one path (or folder) answers."""

    delay_seconds: float = 0.0
    status: int = 200
    # The epoch time after which ``status`` gives way to 200; None: never.
    status_until: float | None = None
    fail_first: int = 0

    def status_now(self, earlier_tries: int) -> int:
        """The status for a request whose webhook-id came ``earlier_tries`` times before."""
        if earlier_tries < self.fail_first:
            return 500
        if self.status_until is not None and time.time() >= self.status_until:
            return 200
        return self.status


@dataclass
class PathLog:
    """What one path received."""

    records: list[dict[str, Any]] = field(default_factory=list)
    tries: Counter[str] = field(default_factory=Counter)
    per_second: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0


class Recorder:
    """The receiver's state and handlers; one event loop, so no locks."""

    def __init__(self) -> None:
        self.paths: dict[str, PathLog] = defaultdict(PathLog)
        self.behaviours: dict[str, Behaviour] = {}

    def behaviour_for(self, path: str) -> Behaviour:
        if path in self.behaviours:
            return self.behaviours[path]
        folders = [key for key in self.behaviours if key.endswith("/") and path.startswith(key)]
        return self.behaviours[max(folders, key=len)] if folders else Behaviour()

    async def hook(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        log = self.paths[request.path]
        log.in_flight += 1
        log.peak_in_flight = max(log.peak_in_flight, log.in_flight)
        log.per_second[int(arrived)] += 1
        webhook_id = request.headers.get("webhook-id", "")
        behaviour = self.behaviour_for(request.path)
        status = behaviour.status_now(log.tries[webhook_id])
        log.tries[webhook_id] += 1
        record = {
            "at": arrived,
            "answered_at": 0.0,
            "path": request.path,
            "webhook_id": webhook_id,
            "job_id": _job_id(body),
            "host": request.remote,
            "status": status,
        }
        log.records.append(record)
        try:
            if behaviour.delay_seconds:
                await asyncio.sleep(behaviour.delay_seconds)
        finally:
            log.in_flight -= 1
            record["answered_at"] = time.time()
        return web.json_response({"ok": 200 <= status < 300}, status=status)

    def _logs(self, request: web.Request) -> list[PathLog]:
        path = request.query.get("path")
        if path is None:
            return list(self.paths.values())
        return [self.paths[path]] if path in self.paths else []

    async def stats(self, request: web.Request) -> web.Response:
        logs = self._logs(request)
        records = [record for log in logs for record in log.records]
        accepted = [r for r in records if 200 <= r["status"] < 300]
        unique = len({r["webhook_id"] for r in accepted})
        per_second: Counter[int] = Counter()
        for log in logs:
            per_second.update(log.per_second)
        return web.json_response(
            {
                "count": len(records),
                "accepted": len(accepted),
                "unique": unique,
                "duplicates": len(accepted) - unique,
                "in_flight": sum(log.in_flight for log in logs),
                "peak_in_flight": max((log.peak_in_flight for log in logs), default=0),
                "busiest_second": busiest_second(
                    [Received(r["path"], {}, b"", r["at"]) for r in records]
                ),
                "per_second": {str(second): n for second, n in sorted(per_second.items())},
                "by_host": dict(Counter(r["host"] for r in records)),
            }
        )

    async def records(self, request: web.Request) -> web.Response:
        logs = self._logs(request)
        records = sorted((r for log in logs for r in log.records), key=lambda r: r["at"])
        return web.json_response({"records": records})

    async def behave(self, request: web.Request) -> web.Response:
        asked = await request.json()
        seconds = asked.get("status_seconds")
        self.behaviours[asked["path"]] = Behaviour(
            delay_seconds=float(asked.get("delay_seconds", 0)),
            status=int(asked.get("status", 200)),
            status_until=time.time() + float(seconds) if seconds is not None else None,
            fail_first=int(asked.get("fail_first", 0)),
        )
        return web.json_response({"ok": True})

    async def reset(self, _request: web.Request) -> web.Response:
        self.paths.clear()
        self.behaviours.clear()
        return web.json_response({"ok": True})

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _job_id(body: bytes) -> str | None:
    try:
        return json.loads(body)["data"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def make_app() -> web.Application:
    """The receiver's aiohttp application."""
    recorder = Recorder()
    app = web.Application()
    app.router.add_get("/_health", recorder.health)
    app.router.add_get("/_stats", recorder.stats)
    app.router.add_get("/_records", recorder.records)
    app.router.add_post("/_behave", recorder.behave)
    app.router.add_post("/_reset", recorder.reset)
    app.router.add_post("/{tail:.*}", recorder.hook)
    return app


class FleetReceiver:
    """The client of a receiver process: start it (inside a namespace, given the command
    prefix), tell it how to answer, read what it recorded."""

    def __init__(self, host: str, port: int, log_dir: Path) -> None:
        self.host = host
        self.port = port
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """Where it listens."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """A callback URL on it."""
        return self.base_url + path

    def start(self, prefix: list[str]) -> None:
        """Run it under ``prefix`` (e.g. ``ip netns exec NS``) and wait until it answers."""
        command = [*prefix, str(BIN / "python"), "-m", "tests.support.fleet_receiver"]
        command += ["--host", self.host, "--port", str(self.port)]
        self.process = start_process(command, {}, self.log_dir / "receiver.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base_url + "/_health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("the fleet receiver did not start")

    def stop(self) -> None:
        """Stop the process."""
        if self.process is not None:
            stop_process(self.process, timeout=10)
        self.process = None

    def stats(self, path: str | None = None) -> dict[str, Any]:
        """The figures for ``path`` (every path without one); see the module's docstring."""
        params = {"path": path} if path is not None else {}
        return requests.get(self.base_url + "/_stats", params=params, timeout=10).json()

    def records(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every request to ``path`` (or to any), in arrival order."""
        params = {"path": path} if path is not None else {}
        return requests.get(self.base_url + "/_records", params=params, timeout=30).json()[
            "records"
        ]

    def behave(self, path: str, **behaviour: float) -> None:
        """Set how ``path`` answers: ``delay_seconds``, ``status``, ``status_seconds``,
        ``fail_first``."""
        response = requests.post(
            self.base_url + "/_behave", json={"path": path, **behaviour}, timeout=10
        )
        response.raise_for_status()

    def reset(self) -> None:
        """Forget everything recorded and every behaviour."""
        requests.post(self.base_url + "/_reset", timeout=10).raise_for_status()


def main() -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # A real server's backlog: a drain opens a hundred connections at once.
    web.run_app(
        make_app(), host=args.host, port=args.port, backlog=512, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
