"""The real service as subprocesses, started from its real commands: gunicorn, the jobs and
deliveries workers (each under ``boomerang worker``, which restarts a dead one) and beat.

``running_stack`` is the one way to get one: the end-to-end, fault and browser tests and the
benchmark all start theirs with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from sqlalchemy import create_engine, text

from tests.support import BIN, REPO
from tests.support.processes import free_ports, start_process, stop_processes
from tests.support.redis_server import RedisServer
from tests.support.settings import PG_ROOT, REDIS_ROOT, make_settings, recreate_database

# Settings for a stack under test: local receivers allowed, short retries and timeouts.
QUICK_ENV = {
    "BOOMERANG_ALLOW_PRIVATE_NETWORKS": "true",
    "BOOMERANG_RETRY_SCHEDULE": "1,1,2",
    "BOOMERANG_RETRY_JITTER": "0",
    "BOOMERANG_CONNECT_TIMEOUT_SECONDS": "1",
    "BOOMERANG_READ_TIMEOUT_SECONDS": "2",
    "BOOMERANG_DELIVERY_LEASE_SECONDS": "10",
    "BOOMERANG_TOTAL_TIMEOUT_SECONDS": "5",
    "BOOMERANG_SWEEP_INTERVAL_SECONDS": "0.5",
}


@dataclass
class Stack:
    """The service's processes, by name: ``web``, ``jobs``, ``deliveries``, ``stream``, ``front``
    and ``beat``."""

    env: dict[str, str]
    log_dir: Path
    # Zero: picked in __post_init__, three different ones.
    web_port: int = 0
    stream_port: int = 0
    front_port: int = 0
    delivery_processes: int = 2
    redis_server: RedisServer | None = None
    # Settings on top of ``env`` for one process by name, e.g. a worker whose clock runs fast.
    process_env: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _log_offsets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        picked = iter(free_ports(3))
        for name in ("web_port", "stream_port", "front_port"):
            if not getattr(self, name):
                setattr(self, name, next(picked))

    @property
    def base_url(self) -> str:
        """Where the API answers."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def stream_base_url(self) -> str:
        """Where the stream process answers (its paths start with /stream)."""
        return f"http://127.0.0.1:{self.stream_port}"

    @property
    def front_url(self) -> str:
        """The one origin (``boomerang front``) for the API and the streams: the public URL."""
        return f"http://127.0.0.1:{self.front_port}"

    @property
    def database_url(self) -> str:
        """The stack's database."""
        return self.env["DATABASE_URL"]

    def commands(self) -> dict[str, list[str]]:
        """Each process's command line, as in the Procfile."""
        worker = [str(BIN / "boomerang"), "worker"]
        return {
            "web": [
                str(BIN / "gunicorn"),
                "--config",
                "python:app.web.gunicorn",
                "app:create_app()",
            ],
            "jobs": [
                *worker,
                "-Q",
                "jobs",
                "-Q",
                "maintenance",
                "-n",
                f"jobs-{self.web_port}@%h",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
            ],
            "deliveries": [
                *worker,
                "-Q",
                "deliveries",
                "-Q",
                "maintenance",
                "-n",
                f"deliveries-{self.web_port}@%h",
                "--concurrency",
                str(self.delivery_processes),
                "--loglevel",
                "INFO",
            ],
            "stream": [str(BIN / "boomerang"), "stream"],
            "front": [
                str(BIN / "boomerang"),
                "front",
                "--port",
                str(self.front_port),
                "--web",
                self.base_url,
                "--stream",
                self.stream_base_url,
            ],
            "beat": [str(BIN / "boomerang"), "beat", "--loglevel", "INFO"],
        }

    def start(self, *names: str) -> None:
        """Start the named processes (all by default) and wait until each is ready."""
        env = {
            **self.env,
            "BOOMERANG_WEB_PORT": str(self.web_port),
            "BOOMERANG_STREAM_PORT": str(self.stream_port),
            "BOOMERANG_WEB_WORKERS": self.env.get("BOOMERANG_WEB_WORKERS", "2"),
            # This stack's processes add up their metrics together, apart from any other stack's.
            "BOOMERANG_METRICS_DIR": str(self.log_dir / "metrics"),
        }
        for name, command in self.commands().items():
            if names and name not in names:
                continue
            path = self.log_dir / f"{name}.log"
            # Readiness is read from what this start writes, not from an earlier run's lines.
            self._log_offsets[name] = path.stat().st_size if path.exists() else 0
            self.processes[name] = start_process(
                command, {**env, **self.process_env.get(name, {})}, path
            )
        self.wait_ready(names or tuple(self.commands()))

    def wait_ready(self, names: tuple[str, ...], timeout: float = 60) -> None:
        """Block until the web answers /readyz and each worker logged that it is ready."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log(name)}")
                if name in ("web", "stream", "front"):
                    url = {
                        "web": self.base_url + "/readyz",
                        "stream": self.stream_base_url + "/stream/healthz",
                        "front": self.front_url + "/stream/healthz",
                    }[name]
                    try:
                        if requests.get(url, timeout=1).status_code == 200:
                            pending.discard(name)
                    except requests.RequestException:
                        pass
                elif name == "beat" or " ready." in self.log(name)[self._log_offsets[name] :]:
                    pending.discard(name)
            time.sleep(0.2)
        if pending:
            raise RuntimeError(
                f"not ready after {timeout}s: {sorted(pending)}\n"
                + "\n".join(self.log(n)[-3000:] for n in pending)
            )

    def log(self, name: str) -> str:
        """Everything the named process wrote."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, *names: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Send ``sig`` to the named processes (all by default) and wait for them to end."""
        stopping = [
            self.processes.pop(name)
            for name in names or tuple(self.processes)
            if name in self.processes
        ]
        stop_processes(stopping, sig, timeout)

    def cli(self, *args: str) -> str:
        """Run ``boomerang <args>`` against the stack's database; its output."""
        return subprocess.run(
            [str(BIN / "boomerang"), *args],
            cwd=REPO,
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def create_tenant(self, name: str) -> dict[str, str]:
        """A new tenant, as ``boomerang tenant create`` prints it (with its API key)."""
        return json.loads(self.cli("tenant", "create", name).strip().splitlines()[-1])

    def sql(self, statement: str, **params: object) -> list:
        """Run one statement on the stack's database, committed; its rows, if any."""
        engine = create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg2://"))
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()


@contextlib.contextmanager
def running_stack(
    database: str,
    log_dir: Path,
    env: Mapping[str, str] = QUICK_ENV,
    *,
    redis_db: int | None = None,
    delivery_processes: int = 2,
    kind: type[Stack] = Stack,
    postgres_url: str = PG_ROOT,
    redis_url: str | None = None,
) -> Iterator[Stack]:
    """The whole service on ``database``, freshly migrated, until the block ends.

    Redis is a private redis-server unless ``redis_db`` names a database of TEST_REDIS_URL's
    server, which is flushed first. ``env`` is the settings on top of the database and Redis;
    ``kind`` may be a Stack subclass with helpers of its own. ``postgres_url`` is the Postgres
    server (TEST_POSTGRES_URL's unless a test brings a private one). ``redis_url`` is a Redis the
    test brings and runs itself (a Sentinel group, say), used as it is.
    """
    redis_server = None
    if redis_url is None and redis_db is None:
        redis_server = RedisServer(log_dir)
        redis_server.start()
        redis_url = redis_server.url
    elif redis_url is None:
        redis_url = f"{REDIS_ROOT}/{redis_db}"
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
    try:
        boomerang_env = {k: v for k, v in env.items() if k.startswith("BOOMERANG_")}
        database_url = f"{postgres_url}/{database}"
        recreate_database(make_settings(database, 0, **boomerang_env, DATABASE_URL=database_url))
        stack = kind(
            env={**env, "DATABASE_URL": database_url, "REDIS_URL": redis_url},
            log_dir=log_dir,
            delivery_processes=delivery_processes,
            redis_server=redis_server,
        )
        stack.env["BOOMERANG_PUBLIC_URL"] = stack.front_url
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
    finally:
        if redis_server is not None:
            redis_server.stop()
