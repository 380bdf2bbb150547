"""Start the real service as subprocesses: gunicorn, the jobs and deliveries workers, and beat."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

REPO = Path(__file__).resolve().parents[2]
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
    "BOOMERANG_REQUEUE_AFTER_SECONDS": "5",
}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    web_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def commands(self) -> dict[str, list[str]]:
        celery = [str(BIN / "celery"), "-A", "workers.main"]
        # Workers run as in the Procfile: under `boomerang worker`, which restarts a dead worker.
        worker = [str(BIN / "boomerang"), "worker"]
        return {
            "web": [
                str(BIN / "gunicorn"),
                "--config",
                "python:config.gunicorn",
                "app:create_app()",
            ],
            "jobs": [
                *worker,
                "-Q",
                "jobs",
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
                "2",
                "--loglevel",
                "INFO",
            ],
            "beat": [
                *celery,
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.log_dir / "beat-schedule"),
            ],
        }

    def start(self, *names: str) -> None:
        env = {
            **os.environ,
            **self.env,
            "BOOMERANG_WEB_PORT": str(self.web_port),
            "BOOMERANG_WEB_WORKERS": self.env.get("BOOMERANG_WEB_WORKERS", "2"),
            # This stack's processes add up their metrics together, apart from any other stack's.
            "BOOMERANG_METRICS_DIR": str(self.log_dir / "metrics"),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        }
        self._log_offsets = {}
        for name, command in self.commands().items():
            if names and name not in names:
                continue
            path = self.log_dir / f"{name}.log"
            # Readiness is read from what this start writes, not from an earlier run's lines.
            self._log_offsets[name] = path.stat().st_size if path.exists() else 0
            with open(path, "ab") as log:
                self.processes[name] = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self.wait_ready(names or tuple(self.commands()))

    def wait_ready(self, names: tuple[str, ...], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log(name)}")
                if name == "web":
                    try:
                        if requests.get(self.base_url + "/readyz", timeout=1).status_code == 200:
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
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, *names: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        for name in names or tuple(self.processes):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                os.killpg(process.pid, sig)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)

    def cli(self, *args: str) -> str:
        env = {**os.environ, **self.env}
        return subprocess.run(
            [str(BIN / "boomerang"), *args],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def create_tenant(self, name: str) -> dict[str, str]:
        return json.loads(self.cli("tenant", "create", name).strip().splitlines()[-1])

    def flush_redis(self) -> None:
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        client.flushdb()
        client.close()


class RedisServer:
    """A private redis-server on a free port, so a test can flush or restart it without touching
    anyone else's queues."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.log_dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.log_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again: with persistence off, every queued message is gone."""
        self.stop()
        self.start()

    def flushall(self) -> None:
        client = redis.Redis.from_url(self.url)
        client.flushall()
        client.close()
