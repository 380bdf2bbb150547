import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app.redis_scripts import evaluate_each
from config.settings import Settings


class CountingConnection(redis.Connection):
    """Counts what it writes to Redis: one write per round trip."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(settings: Settings) -> Iterator[redis.Redis]:
    pool = redis.ConnectionPool.from_url(settings.redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.ping()
    CountingConnection.writes = 0
    yield client
    client.close()


def fresh_script(client: redis.Redis) -> Any:
    """A script Redis has never run: its text is new, so is its sha."""
    return client.register_script(
        f"-- {uuid.uuid4()}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    )


def test_a_script_run_for_many_keys_costs_one_round_trip_once_redis_has_it(counted):
    script = fresh_script(counted)
    counted.script_load(script.script)
    keys = [f"test:scripts:{uuid.uuid4()}" for _ in range(3)]
    CountingConnection.writes = 0
    results = evaluate_each(counted, script, [([key], [n]) for n, key in enumerate(keys, 1)])
    assert results == [1, 2, 3]
    # redis-py's own pipelined scripts ask SCRIPT EXISTS first: two writes.
    assert CountingConnection.writes == 1
    counted.delete(*keys)


def test_a_script_redis_lost_is_loaded_and_every_call_runs_exactly_once(counted):
    script = fresh_script(counted)  # as after a restart or a failover: not in Redis' cache
    keys = [f"test:scripts:{uuid.uuid4()}" for _ in range(3)]
    results = evaluate_each(counted, script, [([key], [n]) for n, key in enumerate(keys, 1)])
    assert results == [1, 2, 3]
    assert [int(counted.get(key) or 0) for key in keys] == [1, 2, 3]
    assert counted.script_exists(script.sha) == [True]
    counted.delete(*keys)
