"""Beat on every host, one leader: a Postgres advisory lock decides which beat sends the schedule.

Each beat holds a connection of its own and tries ``pg_try_advisory_lock`` about once a second.
The one that gets it leads: it confirms the lock before each tick and sends the due tasks; the
others keep ticking and trying. Postgres is already the source of truth and already required, so
the election needs nothing else (a Redis lock would make the broker decide who schedules, and
would have to survive its failovers too).

The lock belongs to the session, so it goes when the session goes:
- a leader killed outright: its socket closes, Postgres ends the session at once;
- a leader host cut off or powered off: the server's TCP keepalives and user timeout end the
  session within ``DEAD_PEER_SECONDS`` (app/db.py);
- a leader frozen (stopped, swapping) whose host still answers TCP: ``idle_session_timeout``
  ends the session, since a live leader runs a query every second;
- a leader whose connection fails, or whose check goes unanswered within ``CHECK_SECONDS``,
  steps down by itself, so it stops sending before Postgres hands the lock to another.

Two leaders for a moment are harmless: the sweep claims with ``SKIP LOCKED`` and only wakes
drains, and pruning deletes what is past retention, which a second run finds already gone.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

import psycopg2
from celery.beat import Scheduler
from sqlalchemy.engine import make_url

from app.db import SERVER_KEEPALIVES, SERVER_USER_TIMEOUT_MS
from app.db_deadline import request_deadline

log = logging.getLogger(__name__)

# Fixed for every Boomerang, and spelled out so no other advisory lock in the database takes it
# by chance. Advisory locks are per database: each Boomerang database elects its own leader.
LOCK_KEY = int.from_bytes(b"bmr-beat", "big")

# How often a follower tries the lock, and the longest a leader goes without confirming it.
RETRY_SECONDS = 1.0
# The longest a lock attempt or check may take before the beat gives up on its connection.
CHECK_SECONDS = 2.0
# A leader frozen this long loses its session (Postgres 14 and later).
IDLE_SESSION_SECONDS = 10


def libpq_dsn(database_url: str) -> str:
    """``DATABASE_URL`` as libpq takes it (without SQLAlchemy's driver suffix)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def one_line(exc: BaseException) -> str:
    """An error as one log line (libpq's messages span several)."""
    return " ".join(str(exc).split())


def connect_for_lock(database_url: str, connect_timeout_seconds: float) -> Any:
    """A connection of its own for the lock, quick to notice and be noticed as dead."""
    # Keepalives and the TCP user timeout on both ends: every connection's server side
    # (app/db.py), and this one's client side too, so a leader cut off notices as soon as
    # Postgres does.
    server_side = {
        "statement_timeout": round(CHECK_SECONDS * 1000),
        **SERVER_KEEPALIVES,
        "tcp_user_timeout": SERVER_USER_TIMEOUT_MS,
    }
    conn = psycopg2.connect(
        libpq_dsn(database_url),
        connect_timeout=max(1, round(connect_timeout_seconds)),
        keepalives=1,
        keepalives_idle=SERVER_KEEPALIVES["tcp_keepalives_idle"],
        keepalives_interval=SERVER_KEEPALIVES["tcp_keepalives_interval"],
        keepalives_count=SERVER_KEEPALIVES["tcp_keepalives_count"],
        tcp_user_timeout=SERVER_USER_TIMEOUT_MS,
        application_name="boomerang beat",
        options=" ".join(f"-c {name}={value}" for name, value in server_side.items()),
    )
    # A session lock needs no transaction, and an open one would hold back vacuum.
    conn.autocommit = True
    if conn.server_version >= 140000:
        with conn.cursor() as cursor:
            cursor.execute("SET idle_session_timeout = %s", (IDLE_SESSION_SECONDS * 1000,))
    return conn


class LeaderLock:
    """The advisory lock on its own connection: whoever holds it leads."""

    def __init__(self, database_url: str, connect_timeout_seconds: float, key: int = LOCK_KEY):
        self.database_url = database_url
        self.connect_timeout_seconds = connect_timeout_seconds
        self.key = key
        self.leading = False
        self._conn: Any = None
        self._following_said = False

    def hold(self) -> bool:
        """Whether this process leads now: confirm the lock it holds, or try to take it."""
        try:
            # Bounds every wait on Postgres, even on a server that answers nothing at all (the
            # worker's Celery app installs the deadline wait callback in every process).
            with request_deadline(CHECK_SECONDS):
                if self.leading:
                    if not self._confirmed():
                        self.step_down("Postgres no longer shows the lock as this session's")
                elif self._take():
                    self.leading = True
                    self._following_said = False
                    log.info("beat: leading; this process sends the schedule (lock %d)", self.key)
                elif not self._following_said:
                    self._following_said = True
                    log.info("beat: following; another beat leads (lock %d)", self.key)
        except psycopg2.Error as exc:
            if self.leading:
                self.step_down(f"could not confirm the lock: {one_line(exc)}")
            else:
                self._close()  # a fresh connection on the next try
                if not self._following_said:
                    self._following_said = True
                    log.warning(
                        "beat: following; cannot reach Postgres to take the lock: %s", one_line(exc)
                    )
        return self.leading

    def step_down(self, reason: str) -> None:
        """Stop leading and drop the connection, so the lock is released if still held."""
        self.leading = False
        self._close()
        log.warning(
            "beat: stopped leading (%s); following, trying the lock every %s s",
            reason,
            RETRY_SECONDS,
        )

    def release(self) -> None:
        """Give the lock up on the way out, at once, so another beat can lead on its next try
        (closing alone leaves the session to end a moment later)."""
        conn = self._conn
        if self.leading and conn is not None and not conn.closed:
            with (
                contextlib.suppress(psycopg2.Error),
                request_deadline(CHECK_SECONDS),
                conn.cursor() as cursor,
            ):
                cursor.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        if self.leading:
            self.leading = False
            log.info("beat: stopped leading (shutting down)")
        self._close()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = connect_for_lock(self.database_url, self.connect_timeout_seconds)
        return self._conn

    def _take(self) -> bool:
        with self._connection().cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            return bool(cursor.fetchone()[0])

    def _confirmed(self) -> bool:
        # A bigint key shows in pg_locks as its high half (classid) and low half (objid).
        with self._connection().cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
                " AND ((classid::bigint << 32) | objid::bigint) = %s",
                (self.key,),
            )
            return bool(cursor.fetchone()[0])

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            # Already gone: the session, and the lock with it, end anyway.
            with contextlib.suppress(psycopg2.Error):
                conn.close()


class LeaderScheduler(Scheduler):
    """Celery beat's in-memory scheduler, sending due tasks only while it holds the lock.

    In memory, not the default shelve file: the schedule is in the code, several beats on one
    host would fight over one file, and a new leader runs everything at once anyway (below).
    """

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        self.max_interval: float = min(self.max_interval, RETRY_SECONDS)  # shown in the banner
        settings = app.boomerang.settings
        self.lock = LeaderLock(settings.database_url, settings.database_connect_timeout_seconds)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send what is due if this process leads; how long to sleep before the next tick."""
        was_leading = self.lock.leading
        if not self.lock.hold():
            return RETRY_SECONDS
        if not was_leading:
            self._everything_due_now()
        return min(super().tick(*args, **kwargs), RETRY_SECONDS)

    def _everything_due_now(self) -> None:
        # A new leader cannot know when the last one sent each entry. Sending each at once is
        # safe (see the module's docstring), and waiting a full interval instead would mean a
        # fleet restarted more often than the prune interval never prunes.
        long_ago = self.app.now() - timedelta(days=365)
        for entry in self.schedule.values():
            entry.last_run_at = long_ago
        self._heap = None

    def close(self) -> None:
        """Release the lock, then the broker connection."""
        self.lock.release()
        super().close()
