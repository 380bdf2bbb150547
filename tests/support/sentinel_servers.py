"""A private Redis Sentinel group on loopback: a primary, its replica and three sentinels, quick to
notice a dead primary and to fail over, so a test can kill the primary and watch the service move.

Set ``TEST_SENTINEL_PORTS`` (primary, replica, then each sentinel, comma-separated) to pin the
ports; otherwise free ones are taken.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.support.processes import free_port, start_process, stop_process

MASTER_NAME = "boomerang"
SENTINELS = 3
# A primary silent this long is down to a sentinel; two of the three must agree to fail over
# (the quorum is 1 to declare it down, but electing the sentinel that leads needs a majority).
# Under 2 s, a busy 2-core machine made sentinels take the primary they had just promoted for
# down too. Each sentinel waits a little longer than the one before: sentinels that notice at the
# same moment each vote for themselves, and a split election is retried only after twice the
# failover timeout, which would measure Sentinel's luck rather than the service.
DOWN_AFTER_MS = 2000
DOWN_AFTER_STEP_MS = 250
# A sentinel whose election was split tries again after twice this.
FAILOVER_TIMEOUT_MS = 3000


def group_ports() -> list[int]:
    """The primary's, the replica's and each sentinel's port."""
    pinned = os.environ.get("TEST_SENTINEL_PORTS")
    if pinned:
        ports = [int(part) for part in pinned.split(",")]
        if len(ports) != 2 + SENTINELS:
            raise RuntimeError(f"TEST_SENTINEL_PORTS needs {2 + SENTINELS} ports")
        return ports
    return [free_port() for _ in range(2 + SENTINELS)]


class SentinelGroup:
    """The servers, each logged to ``log_dir``; ``url`` is what REDIS_URL is set to."""

    def __init__(self, log_dir: Path, ports: list[int] | None = None) -> None:
        self.log_dir = log_dir
        ports = ports or group_ports()
        self.redis_ports = ports[:2]
        self.sentinel_ports = ports[2:]
        self.processes: dict[int, subprocess.Popen] = {}
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        """The service's REDIS_URL: every sentinel, and the primary's name."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"sentinel://{hosts}/0?master={MASTER_NAME}"

    def start(self) -> None:
        """Start the primary, its replica and the sentinels; return once the sentinels know the
        replica and each other, and the replica is in sync, so a failover can happen."""
        primary, replica = self.redis_ports
        self._start_redis(primary)
        self._start_redis(replica, "--replicaof", "127.0.0.1", str(primary))
        for number, port in enumerate(self.sentinel_ports):
            config = self.log_dir / f"sentinel-{port}.conf"
            down_after_ms = DOWN_AFTER_MS + number * DOWN_AFTER_STEP_MS
            # Sentinel rewrites its configuration file as it learns, so each has its own.
            config.write_text(
                f"bind 127.0.0.1\nport {port}\ndir {self.log_dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 1\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.processes[port] = start_process(
                ["redis-server", str(config), "--sentinel"], {}, self.log_dir / f"{port}.log"
            )
        self._wait(self._ready, "the sentinel group to be ready")

    def _start_redis(self, port: int, *extra: str) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        # Sync a replica at once, not after diskless sync's default 5 s wait for more replicas.
        command += ["--appendonly", "no", "--repl-diskless-sync-delay", "0"]
        command += ["--dir", str(self.log_dir), "--dbfilename", f"dump-{port}.rdb", *extra]
        self.processes[port] = start_process(command, {}, self.log_dir / f"{port}.log")

    def _ready(self) -> bool:
        replica = self.client(self.redis_ports[1])
        if replica.info("replication").get("master_link_status") != "up":
            return False
        for port in self.sentinel_ports:
            sentinel = self.client(port)
            replicas = sentinel.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            others = sentinel.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
            if len(replicas) < 1 or len(others) < SENTINELS - 1:
                return False
        return True

    def primary_port(self) -> int:
        """Where the sentinels say the primary is now."""
        for port in self.sentinel_ports:
            try:
                _host, primary = self.client(port).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
                )
                return int(primary)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> int:
        """SIGKILL the primary, as a crashed host would die; its port."""
        port = self.primary_port()
        stop_process(self.processes.pop(port), signal.SIGKILL)
        return port

    def wait_for_new_primary(self, old_port: int, timeout: float = 30) -> int:
        """Block until the sentinels name another primary and it takes writes; its port."""
        self._wait(
            lambda: (
                self.primary_port() != old_port
                and self.client(self.primary_port()).info("replication")["role"] == "master"
            ),
            "a new primary",
            timeout,
        )
        return self.primary_port()

    def client(self, port: int) -> redis.Redis:
        """A plain client of one server of the group."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(
                host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1
            )
        return self._clients[port]

    def _wait(self, predicate, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop(self) -> None:
        """Stop every server of the group."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for process in self.processes.values():
            stop_process(process, timeout=10)
        self.processes.clear()
