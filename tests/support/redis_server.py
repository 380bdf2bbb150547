"""A private redis-server on a free port, so a run can flush or restart it without touching anyone
else's queues."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.support.processes import free_port, start_process, stop_process


class RedisServer:
    """redis-server with persistence off, its log and files in ``log_dir``, on ``host``
    (loopback unless a test serves other network namespaces)."""

    def __init__(self, log_dir: Path, host: str = "127.0.0.1"):
        self.port = free_port()
        self.host = host
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Its database 0."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        command = ["redis-server", "--bind", self.host, "--port", str(self.port)]
        # Without a password, protected mode refuses every client that is not on loopback.
        command += ["--protected-mode", "no" if self.host != "127.0.0.1" else "yes"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.log_dir)]
        self.process = start_process(command, {}, self.log_dir / "redis.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        """Stop it; everything it held is gone."""
        if self.process is not None:
            stop_process(self.process, timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again: with persistence off, every queued message is gone."""
        self.stop()
        self.start()

    def hang(self) -> None:
        """Freeze it (SIGSTOP): connections stay open and nothing answers, as on a stuck host."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def unhang(self) -> None:
        """Let a frozen server go on (SIGCONT), with everything it held."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def flushall(self) -> None:
        """Empty every database."""
        client = redis.Redis.from_url(self.url)
        client.flushall()
        client.close()
