"""Beat's leader election on the real Postgres: one lock holder leads, and a leader that cannot
confirm its lock steps down."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace

import psycopg2
import psycopg2.extensions
import pytest
from celery import Celery

from app.db_deadline import make_wait_callback
from tests.support.postgres_server import PostgresServer
from workers import leader
from workers.leader import CHECK_SECONDS, RETRY_SECONDS, LeaderLock, LeaderScheduler

# Not beat's own key: a beat the process tests start on this database must not meet these locks.
TEST_KEY = leader.LOCK_KEY + 1


@pytest.fixture
def make_lock(settings):
    """LeaderLocks on the test database, all released when the test ends."""
    made: list[LeaderLock] = []

    def make() -> LeaderLock:
        lock = LeaderLock(settings.database_url, 2, key=TEST_KEY)
        made.append(lock)
        return lock

    yield make
    for lock in made:
        lock.release()


def terminate_session_of(lock: LeaderLock, settings) -> None:
    """End the lock's session from outside, as a Postgres restart or an operator would."""
    pid = lock._conn.get_backend_pid()
    with psycopg2.connect(leader.libpq_dsn(settings.database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))


def takes_over(lock: LeaderLock) -> bool:
    """Whether ``lock`` comes to lead within a few seconds. A session that is gone lets go of its
    locks as its backend exits, a moment later; one left open would hold them until
    IDLE_SESSION_SECONDS."""
    deadline = time.monotonic() + leader.IDLE_SESSION_SECONDS / 2
    while not lock.hold():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def test_only_one_of_two_locks_leads_until_it_lets_go(make_lock):
    first, second = make_lock(), make_lock()
    assert first.hold()
    assert not second.hold()
    assert first.hold()  # confirmed, still leading
    assert not second.hold()
    first.release()
    assert second.hold()


def test_a_leader_whose_connection_fails_steps_down_and_says_so(make_lock, settings, caplog):
    first, second = make_lock(), make_lock()
    assert first.hold()
    assert not second.hold()
    terminate_session_of(first, settings)
    with caplog.at_level(logging.INFO, logger="workers.leader"):
        assert not first.hold()
    assert not first.leading
    assert "beat: stopped leading (could not confirm the lock" in caplog.text
    assert takes_over(second)  # the lock went with the session
    assert not first.hold()


class SlowToConfirm(LeaderLock):
    """A lock whose check takes longer than any answer is waited for."""

    def _confirmed(self) -> bool:
        with self._connection().cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", (CHECK_SECONDS * 5,))
        return True


def test_a_leader_whose_check_goes_unanswered_steps_down_within_the_check_bound(settings, caplog):
    lock = SlowToConfirm(settings.database_url, 2, key=TEST_KEY)
    try:
        assert lock.hold()
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="workers.leader"):
            assert not lock.hold()
        # Within one check's bound and a busy host's slack, short of a second check's.
        assert time.monotonic() - started < 2 * CHECK_SECONDS
        assert "beat: stopped leading" in caplog.text
        # Its session is gone, so another may lead without waiting for it to time out.
        other = LeaderLock(settings.database_url, 2, key=TEST_KEY)
        assert takes_over(other)
        other.release()
    finally:
        lock.release()


class RecordingScheduler(LeaderScheduler):
    """The leader scheduler with the broker left out: what it would send, by entry name."""

    def __init__(self, *args, **kwargs):
        self.sent: list[str] = []
        super().__init__(*args, **kwargs)

    def apply_entry(self, entry, producer=None):
        self.sent.append(entry.name)

    @property
    def producer(self):
        return None


@pytest.fixture
def make_scheduler(settings):
    """Schedulers with an hourly entry and a frequent one, electing on the test key."""
    made: list[RecordingScheduler] = []

    def make() -> RecordingScheduler:
        app = Celery(set_as_current=False)
        app.conf.beat_schedule = {
            "hourly": {"task": "hourly", "schedule": 3600.0},
            "often": {"task": "often", "schedule": 0.2},
        }
        app.boomerang = SimpleNamespace(settings=settings)  # type: ignore[attr-defined]
        scheduler = RecordingScheduler(app=app)
        scheduler.lock.key = TEST_KEY
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.lock.release()


def test_a_follower_sends_nothing_and_a_new_leader_sends_every_entry_at_once(make_scheduler):
    first, second = make_scheduler(), make_scheduler()
    for _ in range(3):
        first.tick()
    assert sorted(first.sent[:2]) == ["hourly", "often"]
    assert second.tick() == RETRY_SECONDS
    assert second.sent == []
    first.lock.release()
    for _ in range(3):
        second.tick()
    # It cannot know when the last leader ran the hourly entry, so it runs it now.
    assert sorted(second.sent[:2]) == ["hourly", "often"]


def test_the_lock_session_is_set_to_be_found_dead_within_seconds(settings):
    conn = leader.connect_for_lock(settings.database_url, 2)
    try:
        with conn.cursor() as cursor:
            shown = {}
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
                "statement_timeout",
                "idle_session_timeout",
            ):
                cursor.execute(f"SHOW {name}")
                shown[name] = cursor.fetchone()[0]
    finally:
        conn.close()
    assert shown == {
        "tcp_keepalives_idle": "2",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "5000",  # milliseconds, shown without a unit
        "statement_timeout": "2s",
        "idle_session_timeout": "10s",
    }


@pytest.fixture
def private_postgres(tmp_path) -> Iterator[PostgresServer]:
    """A Postgres server of this test's own, which it may freeze."""
    server = PostgresServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker_deadlines() -> Iterator[None]:
    """Waits for Postgres bounded as in a worker or beat process, whose statements may take 30 s:
    only the lock's own deadline can end its check sooner."""
    psycopg2.extensions.set_wait_callback(make_wait_callback(2.0, 30.0))
    yield
    psycopg2.extensions.set_wait_callback(None)


def test_a_leader_whose_postgres_stops_answering_steps_down_within_the_check_bound(
    private_postgres, worker_deadlines, caplog
):
    # A frozen server enforces no statement_timeout and its host still answers TCP, so neither
    # the server nor the keepalives end the check: the client-side deadline must.
    lock = LeaderLock(f"{private_postgres.url}/postgres", 2)
    assert lock.hold()
    private_postgres.hang()
    try:
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="workers.leader"):
            assert not lock.hold()
        # Within one check's bound and a busy host's slack, short of a second check's.
        assert time.monotonic() - started < 2 * CHECK_SECONDS
        assert "beat: stopped leading (could not confirm the lock" in caplog.text
    finally:
        private_postgres.unhang()
        lock.release()
