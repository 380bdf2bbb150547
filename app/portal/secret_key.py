"""The key that signs portal sessions: the setting, or else one made once and kept in Postgres.

Every web process on every host must sign and check cookies with the same key, or a sign-in made
on one gunicorn worker is unknown to the next. A fresh machine has no key configured, and `make
run` must still just work: so when ``BOOMERANG_SECRET_KEY`` is empty, the first process to need a
key makes one and stores it, and every process reads the stored one. No flask here.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import ServerSecret

SESSION_KEY_NAME = "portal_session_key"


def stored_secret(session: Session, name: str) -> str:
    """The installation's secret called ``name``, made now if no process has made it yet."""
    # Two processes racing here both insert; the loser's row is dropped, and both then read the
    # winner's (the unique key makes the loser wait for the winner's commit).
    session.execute(
        insert(ServerSecret)
        .values(name=name, value=secrets.token_urlsafe(48))
        .on_conflict_do_nothing(index_elements=[ServerSecret.name])
    )
    value = session.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    assert value is not None  # inserted above or by the process that won the race
    return value
