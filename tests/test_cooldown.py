import socket
import time

import pytest
import redis

from app.cooldown import Cooldown, quick_redis


def test_a_cooldown_rests_after_a_failure_and_then_lets_redis_be_asked_again():
    now = [100.0]
    cooldown = Cooldown(rest_seconds=5, clock=lambda: now[0])
    assert not cooldown.resting
    cooldown.failed("test")
    now[0] += 4.9
    assert cooldown.resting
    now[0] += 0.2
    assert not cooldown.resting


def test_a_quick_client_gives_up_on_a_server_that_accepts_and_never_answers():
    # A listening socket nobody accepts from: the kernel completes the connect, as for a frozen
    # Redis, and no reply ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = quick_redis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", 1.0)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        # One timeout and a busy host's slack, short of three (redis-py's default retries make
        # four tries).
        assert time.monotonic() - started < 2.5
        client.close()
