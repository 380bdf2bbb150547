"""Fixtures the worker tests share: an outbound client, the tenant that owns what they send, and
a Waker on real Redis whose wakes are collected in a list."""

from __future__ import annotations

import pytest
import redis

from workers.http import OutboundClient
from workers.wake import HELP_KEY, WAKE_KEY, Waker


@pytest.fixture
def http(settings):
    client = OutboundClient(settings)
    yield client
    client.close()


@pytest.fixture
def owner(tenant):
    return tenant[0]


@pytest.fixture
def wakes(settings):
    sent: list[str] = []
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(WAKE_KEY, HELP_KEY)
    yield Waker(settings.redis_url, lambda: sent.append("wake")), sent
    client.delete(WAKE_KEY, HELP_KEY)
    client.close()
