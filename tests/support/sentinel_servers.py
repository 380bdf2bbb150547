"""A private Redis Sentinel group: a primary, its replica and three sentinels, quick to notice a
dead primary and to fail over, so a test can kill the primary and watch the service move.

On loopback by default. Set ``TEST_SENTINEL_PORTS`` (primary, replica, then each sentinel,
comma-separated) to pin the ports; otherwise free ones are taken. The multi-host tests place each
server in a network namespace instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.processes import free_ports, start_process, stop_process

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
    return free_ports(2 + SENTINELS)


def as_is(argv: list[str]) -> list[str]:
    return argv


@dataclass(frozen=True)
class Place:
    """Where one server of the group runs: the address it listens on, its port, and how its
    command is run there (as is on this host, or inside a network namespace)."""

    address: str
    port: int
    run: Callable[[list[str]], list[str]] = as_is

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.address, self.port)


def loopback_places() -> list[Place]:
    """The primary, the replica and each sentinel on loopback, each on a port of its own."""
    return [Place("127.0.0.1", port) for port in group_ports()]


class SentinelGroup:
    """The servers, each logged to ``log_dir``; ``url`` is what REDIS_URL is set to.

    ``places`` are the primary's, the replica's and then each sentinel's (loopback by default);
    servers are named by their (address, port) endpoint."""

    def __init__(self, log_dir: Path, places: list[Place] | None = None) -> None:
        self.log_dir = log_dir
        places = places or loopback_places()
        if len(places) != 2 + SENTINELS:
            raise ValueError(f"a group has {2 + SENTINELS} servers")
        self.redis_places = places[:2]
        self.sentinel_places = places[2:]
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self._clients: dict[tuple[str, int], redis.Redis] = {}

    @property
    def url(self) -> str:
        """The service's REDIS_URL: every sentinel, and the primary's name."""
        hosts = ",".join(f"{place.address}:{place.port}" for place in self.sentinel_places)
        return f"sentinel://{hosts}/0?master={MASTER_NAME}"

    def start(self) -> None:
        """Start the primary, its replica and the sentinels; return once the sentinels know the
        replica and each other, and the replica is in sync, so a failover can happen."""
        primary, replica = self.redis_places
        self._start_redis(primary)
        self._start_redis(replica, "--replicaof", primary.address, str(primary.port))
        for number, place in enumerate(self.sentinel_places):
            name = f"sentinel-{place.address}-{place.port}"
            config = self.log_dir / f"{name}.conf"
            down_after_ms = DOWN_AFTER_MS + number * DOWN_AFTER_STEP_MS
            # Sentinel rewrites its configuration file as it learns, so each has its own.
            # Without a password, protected mode refuses every client that is not on loopback.
            config.write_text(
                f"bind {place.address}\nport {place.port}\ndir {self.log_dir}\n"
                f"protected-mode {_protected_mode(place)}\n"
                f"sentinel monitor {MASTER_NAME} {primary.address} {primary.port} 1\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.processes[place.endpoint] = start_process(
                place.run(["redis-server", str(config), "--sentinel"]),
                {},
                self.log_dir / f"{name}.log",
            )
        self._wait(self._ready, "the sentinel group to be ready")

    def _start_redis(self, place: Place, *extra: str) -> None:
        name = f"redis-{place.address}-{place.port}"
        command = ["redis-server", "--bind", place.address, "--port", str(place.port)]
        command += ["--protected-mode", _protected_mode(place), "--save", ""]
        # Sync a replica at once, not after diskless sync's default 5 s wait for more replicas.
        command += ["--appendonly", "no", "--repl-diskless-sync-delay", "0"]
        command += ["--dir", str(self.log_dir), "--dbfilename", f"{name}.rdb", *extra]
        self.processes[place.endpoint] = start_process(
            place.run(command), {}, self.log_dir / f"{name}.log"
        )

    def _ready(self) -> bool:
        replica = self.client(self.redis_places[1].endpoint)
        if replica.info("replication").get("master_link_status") != "up":
            return False
        for place in self.sentinel_places:
            sentinel = self.client(place.endpoint)
            replicas = sentinel.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            others = sentinel.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
            if len(replicas) < 1 or len(others) < SENTINELS - 1:
                return False
        return True

    def primary(self) -> tuple[str, int]:
        """Where the sentinels say the primary is now."""
        for place in self.sentinel_places:
            try:
                host, port = self.client(place.endpoint).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
                )
                return (host.decode() if isinstance(host, bytes) else host, int(port))
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> tuple[str, int]:
        """SIGKILL the primary, as a crashed server would die; where it was."""
        endpoint = self.primary()
        stop_process(self.processes.pop(endpoint), signal.SIGKILL)
        return endpoint

    def switch_primary(self) -> tuple[str, int]:
        """A planned failover: the old primary lives on as a replica; where it was."""
        old = self.primary()
        self.client(self.sentinel_places[0].endpoint).execute_command(
            "SENTINEL", "FAILOVER", MASTER_NAME
        )
        return old

    def wait_for_new_primary(self, old: tuple[str, int], timeout: float = 30) -> tuple[str, int]:
        """Block until the sentinels name another primary and it takes writes; where it is."""
        self._wait(
            lambda: (
                self.primary() != old
                and self.client(self.primary()).info("replication")["role"] == "master"
            ),
            "a new primary",
            timeout,
        )
        return self.primary()

    def client(self, endpoint: tuple[str, int]) -> redis.Redis:
        """A plain client of one server of the group."""
        if endpoint not in self._clients:
            host, port = endpoint
            # No retries: asking a dead sentinel must fail at once, so the next is asked.
            self._clients[endpoint] = redis.Redis(
                host=host,
                port=port,
                socket_timeout=1,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 0),
            )
        return self._clients[endpoint]

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


def _protected_mode(place: Place) -> str:
    return "yes" if place.address == "127.0.0.1" else "no"
