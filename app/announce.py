"""After a commit that stored events, tell the stream processes: one Redis PUBLISH per job or
tenant, all of a transaction's sent in one round trip.

Postgres holds the events; the announcement only wakes whoever waits on them (a long poll, an
event stream, a feed). It is sent after commit, so a waiter that re-reads finds what it was told
about. A lost announcement (Redis down, a subscriber reconnecting) delays a waiter until its next
timed re-read; it never loses an event.
"""

from __future__ import annotations

import logging
import uuid

import redis
from sqlalchemy.orm import Session, sessionmaker

from app.cooldown import Cooldown, quick_redis
from app.db import after_commit_each

log = logging.getLogger(__name__)

CHANNEL = "boomerang:events"
_INFO_KEY = "boomerang.announcer"


class Announcer:
    """Publishes ``"<tenant_id> <job_id or ->"`` on CHANNEL.

    A request or a job's commit must not wait long on Redis for a courtesy: a transaction's
    announcements give up after ``timeout_seconds``, and none are tried while ``cooldown`` rests
    after a failure.
    """

    def __init__(
        self, redis_url: str, timeout_seconds: float = 0.5, cooldown: Cooldown | None = None
    ) -> None:
        self._redis = quick_redis(redis_url, timeout_seconds)
        self._cooldown = cooldown or Cooldown()

    def announce_all(self, announcements: list[tuple[uuid.UUID, uuid.UUID | None]]) -> None:
        """Publish each distinct announcement, all in one round trip."""
        if self._cooldown.resting or not announcements:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipeline:
                for tenant_id, job_id in dict.fromkeys(announcements):
                    pipeline.publish(CHANNEL, f"{tenant_id} {job_id or '-'}")
                pipeline.execute()
        except redis.RedisError:
            self._cooldown.failed("announce")
            log.debug("could not announce an event; waiters will find it on their next look")


def install_announcer(factory: sessionmaker[Session], announcer: Announcer) -> None:
    """Sessions from ``factory`` announce the events they commit through ``announcer``."""
    factory.configure(info={**factory.kw.get("info", {}), _INFO_KEY: announcer})


def announce_after_commit(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID | None) -> None:
    """Announce an event of ``tenant_id`` (and ``job_id``) once this transaction commits."""
    announcer = session.info.get(_INFO_KEY)
    if announcer is not None:
        after_commit_each(session, announcer.announce_all, (tenant_id, job_id))


def parse(message: bytes | str) -> tuple[str, str | None]:
    """The tenant id and job id (or None) of an announcement."""
    text = message.decode() if isinstance(message, bytes) else message
    tenant_id, _, job_id = text.partition(" ")
    return tenant_id, (None if job_id in ("", "-") else job_id)
