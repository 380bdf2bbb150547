"""Every Redis connection comes from one factory; behind Sentinel it asks for the primary."""

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.sentinel import SentinelConnectionPool

from app.queues import make_celery
from app.redis_client import async_redis_client, celery_broker, redis_client
from config.settings import Settings
from workers.celery_app import WORKER_REDIS_TIMEOUT_SECONDS, configure_worker

SENTINEL_URL = "sentinel://:p%40ss@h1:26379,h2:26380,[::1]:26381/3?master=mymaster"


def test_a_plain_url_is_one_server_with_the_timeouts_and_no_retries():
    client = redis_client("redis://127.0.0.1:6379/4", 0.25)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6379, 4)
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.25
    assert kwargs["retry"].get_retries() == 0


def test_a_sentinel_url_is_the_named_primary_with_the_same_bounds_on_the_sentinels_too():
    client = redis_client(SENTINEL_URL, 0.25)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"]) == (3, "p@ss")
    assert kwargs["socket_timeout"] == 0.25
    assert kwargs["retry"].get_retries() == 0
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380, 26381]
    for sentinel in sentinels:
        sentinel_kwargs = sentinel.connection_pool.connection_kwargs
        assert sentinel_kwargs["socket_connect_timeout"] == 0.25
        assert sentinel_kwargs["retry"].get_retries() == 0
        assert sentinel_kwargs["password"] is None


def test_celery_gets_one_sentinel_url_per_sentinel_and_the_primary_name():
    broker, options = celery_broker(SENTINEL_URL, 0.5)
    assert broker == (
        "sentinel://:p%40ss@h1:26379/3;sentinel://:p%40ss@h2:26380/3;sentinel://:p%40ss@[::1]:26381/3"
    )
    assert options["master_name"] == "mymaster"
    # A dead sentinel is skipped at once, not retried with backoff on every reconnect.
    assert options["sentinel_kwargs"]["socket_connect_timeout"] == 0.5
    assert options["sentinel_kwargs"]["retry"].get_retries() == 0
    assert celery_broker("redis://127.0.0.1:6379/0", 0.5) == ("redis://127.0.0.1:6379/0", {})


def test_the_worker_keeps_the_primary_name_beside_its_own_transport_options():
    settings = Settings.from_env({"REDIS_URL": SENTINEL_URL})
    app = make_celery(settings)
    configure_worker(app, settings)
    options = app.conf.broker_transport_options
    assert options["master_name"] == "mymaster"
    assert options["visibility_timeout"] == 3600
    assert options["sentinel_kwargs"]["socket_timeout"] == WORKER_REDIS_TIMEOUT_SECONDS
    assert app.connection_for_write().transport_cls == "sentinel"


def test_a_plain_redis_client_is_still_a_plain_redis():
    assert isinstance(redis_client("redis://127.0.0.1:6379/0", 1), redis.Redis)


@pytest.fixture
def silent_sentinels() -> Iterator[list[int]]:
    """Two ports that accept connections and never answer, as hung sentinels would."""
    listeners = []
    for _ in range(2):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listeners.append(listener)
    try:
        yield [listener.getsockname()[1] for listener in listeners]
    finally:
        for listener in listeners:
            listener.close()


def test_hung_sentinels_cost_one_timeout_each_then_a_redis_error(silent_sentinels):
    hosts = ",".join(f"127.0.0.1:{port}" for port in silent_sentinels)
    client = redis_client(f"sentinel://{hosts}/0?master=mymaster", 0.5)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    # Two sentinels, one 0.5 s read timeout each, no retries: 1 s and a busy host's slack, short
    # of five timeouts (redis-py's default retries take four a sentinel).
    assert time.monotonic() - started < 2.5
    client.close()


def test_the_streams_subscription_client_asks_the_sentinels_too():
    client = async_redis_client(SENTINEL_URL, 0.25)
    pool = client.connection_pool
    assert isinstance(pool, AsyncSentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.25
    for sentinel in pool.sentinel_manager.sentinels:
        assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 0.25
