"""The one place that turns ``REDIS_URL`` into connections: to one server, or through Sentinel.

Every Redis client of every process is made here (the wakes, the announcer, the rate limit, the
shared lanes, the tenant ceiling, ``/readyz``, the stream's subscription) and so is the Celery
broker's address, so nothing else needs to know whether Redis is one server or a primary that
Sentinel fails over. With Sentinel, each new connection first asks the sentinels where the
primary is; a connection to a primary that died or was demoted fails (a demoted one answers
writes with READONLY, which redis-py turns into a connection error), the caller's usual Redis
failure handling applies, and the next connection goes to the new primary. The sentinels get the
same timeouts as the primary and no retries (``sentinel_query_options``), so a hung sentinel
costs one timeout, then the next sentinel is asked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from config.redis_url import is_sentinel_url, parse_sentinel_url


def redis_client(url: str, timeout_seconds: float) -> redis.Redis:
    """A client whose connects and commands each give up after ``timeout_seconds``, once.

    redis-py retries a timed-out command three times with backoff by default, which would turn a
    half-second bound into several seconds.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
    }
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(
        list(target.sentinels), sentinel_kwargs=sentinel_query_options(timeout_seconds), **options
    )
    return sentinel.master_for(
        target.master_name,
        db=target.db,
        username=target.username,
        password=target.password,
    )


def async_redis_client(url: str, connect_timeout_seconds: float) -> aioredis.Redis:
    """An asyncio client for a long-lived subscription: connects give up after
    ``connect_timeout_seconds``; reads wait, since a subscription is quiet by nature."""
    if not is_sentinel_url(url):
        return aioredis.Redis.from_url(url, socket_connect_timeout=connect_timeout_seconds)
    target = parse_sentinel_url(url)
    sentinel = AsyncSentinel(
        list(target.sentinels),
        # Asking a sentinel where the primary is is one quick round trip: bound it whole.
        sentinel_kwargs={
            "socket_timeout": connect_timeout_seconds,
            "socket_connect_timeout": connect_timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
        },
        socket_connect_timeout=connect_timeout_seconds,
    )
    return sentinel.master_for(
        target.master_name,
        db=target.db,
        username=target.username,
        password=target.password,
    )


def sentinel_query_options(timeout_seconds: float) -> dict[str, Any]:
    """How a sentinel is asked where the primary is: one quick round trip, bounded whole and
    never retried, so a dead sentinel costs a refused connect (a hung one a timeout) before the
    next is asked. redis-py would otherwise retry each sentinel three times with up to 10 s of
    backoff, and it asks on every new connection: behind a dead first sentinel, a worker's
    reconnect after a failover took half a minute."""
    return {
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
    }


def celery_broker(url: str, timeout_seconds: float) -> tuple[str, dict[str, Any]]:
    """The broker URL kombu reads, and the transport options it needs beside it.

    kombu names each sentinel as its own ``sentinel://`` URL, joined by ``;``, and takes the
    primary's name as the ``master_name`` transport option and how to ask the sentinels as
    ``sentinel_kwargs``, bounded by ``timeout_seconds``.
    """
    if not is_sentinel_url(url):
        return url, {}
    target = parse_sentinel_url(url)
    # Keep the user and password exactly as written (percent-encoded): kombu decodes them.
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    auth = f"{userinfo}@" if at else ""
    hosts = ";".join(
        f"sentinel://{auth}{_bracketed(host)}:{port}/{target.db}" for host, port in target.sentinels
    )
    return hosts, {
        "master_name": target.master_name,
        "sentinel_kwargs": sentinel_query_options(timeout_seconds),
    }


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
