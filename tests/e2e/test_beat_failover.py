"""Beat on every host: real `boomerang beat` processes on the real Postgres and a private Redis.
Exactly one sends the schedule, and when it is killed another takes over within seconds."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from app.queues import MAINTENANCE_QUEUE
from tests.support import BIN
from tests.support.processes import start_process, stop_process
from tests.support.redis_server import RedisServer
from workers.leader import IDLE_SESSION_SECONDS, RETRY_SECONDS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LEADING = "beat: leading"
FOLLOWING = "beat: following"
SENT_SWEEP = "Sending due task sweep"
# Killed outright, a leader's session ends at once; the next try, within a second, takes over.
# The bound leaves a loaded host two seconds more, and stays under the 5 s a dead peer takes to
# be noticed by keepalives and the IDLE_SESSION_SECONDS a frozen leader's session is left to.
FAILOVER_BOUND_SECONDS = RETRY_SECONDS + 3


@dataclass
class Beat:
    """One `boomerang beat` process and its log."""

    name: str
    process: object
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        time.sleep(0.05)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def beats(settings, private_redis, tmp_path) -> Iterator[list[Beat]]:
    """Two beats, as two hosts would run them, once one leads and the other follows."""
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": private_redis.url,
        "BOOMERANG_SWEEP_INTERVAL_SECONDS": "0.5",
    }
    started = []
    for name in ("a", "b"):
        log_path = tmp_path / f"beat-{name}.log"
        command = [str(BIN / "boomerang"), "beat", "--loglevel", "INFO"]
        started.append(Beat(name, start_process(command, env, log_path), log_path))
    try:
        wait_for(
            lambda: all(LEADING in b.log() or FOLLOWING in b.log() for b in started),
            30,
            "both beats joined the election",
        )
        yield started
    finally:
        for beat in started:
            stop_process(beat.process)  # type: ignore[arg-type]


def queued_sweeps(server: RedisServer) -> int:
    """How many messages beat put on the maintenance queue (no worker consumes them here)."""
    return int(redis.Redis.from_url(server.url).llen(MAINTENANCE_QUEUE))


def test_of_two_beats_exactly_one_sends_the_schedule(beats, private_redis):
    sent_before = {b.name: b.log().count(SENT_SWEEP) for b in beats}
    # Five more sweeps at 0.5 s, however long a loaded host takes: meanwhile, 2 s at least, the
    # follower ticks (every RETRY_SECONDS) and has its chances to send what it must not.
    wait_for(
        lambda: (
            any(b.log().count(SENT_SWEEP) >= sent_before[b.name] + 5 for b in beats)
            and queued_sweeps(private_redis) >= 3
        ),
        15,
        "five more sweeps sent, and three queued",
    )
    leaders = [b for b in beats if LEADING in b.log()]
    assert len(leaders) == 1
    (follower,) = [b for b in beats if b is not leaders[0]]
    assert FOLLOWING in follower.log()
    assert "Sending due task" not in follower.log()
    assert leaders[0].log().count(SENT_SWEEP) >= 3
    assert queued_sweeps(private_redis) >= 3


def test_when_the_leader_is_killed_the_other_takes_over_within_seconds(beats, private_redis):
    wait_for(lambda: any(LEADING in b.log() for b in beats), 5, "a leader")
    (leader,) = [b for b in beats if LEADING in b.log()]
    (follower,) = [b for b in beats if b is not leader]
    killed_at = time.monotonic()
    stop_process(leader.process, signal.SIGKILL)  # type: ignore[arg-type]
    queued_before = queued_sweeps(private_redis)

    wait_for(lambda: LEADING in follower.log(), FAILOVER_BOUND_SECONDS, "the follower leads")
    failover_seconds = time.monotonic() - killed_at
    # The sweep keeps firing, from the new leader.
    wait_for(lambda: follower.log().count(SENT_SWEEP) >= 3, 15, "sweeps from the new leader")
    assert queued_sweeps(private_redis) >= queued_before + 3
    assert failover_seconds < FAILOVER_BOUND_SECONDS


def test_a_frozen_leader_loses_its_session_and_steps_down_when_it_wakes(beats, private_redis):
    wait_for(lambda: any(LEADING in b.log() for b in beats), 5, "a leader")
    (leader,) = [b for b in beats if LEADING in b.log()]
    (follower,) = [b for b in beats if b is not leader]
    os.killpg(leader.process.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
    frozen_at = time.monotonic()
    try:
        # Its host still answers TCP, so only the idle session timeout ends its session.
        bound = IDLE_SESSION_SECONDS + RETRY_SECONDS + 2
        wait_for(lambda: LEADING in follower.log(), bound, "the follower leads")
        takeover_seconds = time.monotonic() - frozen_at
    finally:
        os.killpg(leader.process.pid, signal.SIGCONT)  # type: ignore[attr-defined]
    wait_for(lambda: "beat: stopped leading" in leader.log(), 5, "the old leader steps down")
    assert IDLE_SESSION_SECONDS - 1 < takeover_seconds < bound
