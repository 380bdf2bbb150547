"""Announcements wake stream and long-poll waiters: sent once the transaction commits, all of a
transaction's together, none after a rollback."""

from __future__ import annotations

import time
import uuid

import redis
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from app.announce import CHANNEL, Announcer, announce_after_commit, install_announcer


class RecordingAnnouncer(Announcer):
    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        self.calls: list[list[tuple[uuid.UUID, uuid.UUID | None]]] = []

    def announce_all(self, announcements):
        self.calls.append(list(announcements))
        super().announce_all(announcements)


def published_for(pubsub, tenant_id: uuid.UUID, count: int, seconds: float = 5.0) -> list[str]:
    """The announcements of ``tenant_id`` seen on the channel (other tests publish there too)."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while len(seen) < count and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message and message["data"].decode().startswith(str(tenant_id)):
            seen.append(message["data"].decode())
    return seen


def test_a_transactions_announcements_go_out_together_once_it_commits(engine, settings):
    announcer = RecordingAnnouncer(settings.redis_url)
    sessions = sessionmaker(bind=engine)
    install_announcer(sessions, announcer)
    pubsub = redis.Redis.from_url(settings.redis_url).pubsub()
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=5)  # the subscription is confirmed
    tenant_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
            for job_id in (first, second, first):
                announce_after_commit(session, tenant_id, job_id)
            assert announcer.calls == []  # nothing before the commit
            session.commit()
            assert announcer.calls == [
                [(tenant_id, first), (tenant_id, second), (tenant_id, first)]
            ]

            session.execute(text("SELECT 1"))
            announce_after_commit(session, tenant_id, None)
            session.rollback()
            session.execute(text("SELECT 1"))
            session.commit()
        assert len(announcer.calls) == 1  # the rolled-back one never went out, nor later
        # A job announced twice in one transaction wakes its waiters once.
        assert published_for(pubsub, tenant_id, 3, seconds=2) == [
            f"{tenant_id} {first}",
            f"{tenant_id} {second}",
        ]
    finally:
        pubsub.close()
