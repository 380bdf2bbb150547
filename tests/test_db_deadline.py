import contextlib
import os
import resource
import socket
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from app.db_deadline import DatabaseTimeout, make_wait_callback, request_deadline
from tests.support.settings import PG_ROOT


@pytest.fixture
def deadlines():
    """Waits for Postgres bounded to 1 s to connect and 1 s (plus grace) per statement."""
    psycopg2.extensions.set_wait_callback(make_wait_callback(1.0, 1.0))
    yield
    psycopg2.extensions.set_wait_callback(None)


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A database URL on a listening socket nobody accepts from: the connect completes and no
    answer ever comes."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x"


def test_a_connect_to_a_server_that_never_answers_gives_up_at_the_connect_deadline(deadlines):
    with silent_server() as url:
        started = time.monotonic()
        with pytest.raises(DatabaseTimeout):
            psycopg2.connect(url)
        assert time.monotonic() - started < 2.5


def test_a_statement_gives_up_at_the_request_deadline_and_its_connection_is_closed(deadlines):
    conn = psycopg2.connect(f"{PG_ROOT}/postgres")
    started = time.monotonic()
    with request_deadline(0.3), pytest.raises(DatabaseTimeout):
        conn.cursor().execute("SELECT pg_sleep(5)")
    assert time.monotonic() - started < 2.0
    assert conn.closed


def test_a_statement_within_its_deadline_answers(deadlines):
    conn = psycopg2.connect(f"{PG_ROOT}/postgres")
    with request_deadline(2.0):
        cursor = conn.cursor()
        cursor.execute("SELECT 41 + 1")
        assert cursor.fetchone() == (42,)
    conn.close()


def test_after_a_wait_gave_up_the_next_waits_are_short_until_one_succeeds():
    # Wary waits of 1 s: a real connect must fit in one on a busy host.
    psycopg2.extensions.set_wait_callback(make_wait_callback(5.0, 3.0, wary_seconds=1.0))
    try:
        first = psycopg2.connect(f"{PG_ROOT}/postgres")
        with request_deadline(0.3), pytest.raises(DatabaseTimeout):
            first.cursor().execute("SELECT pg_sleep(5)")

        # Wary now: a server that never answers is given up on soon, not after 5 s.
        with silent_server() as url:
            started = time.monotonic()
            with pytest.raises(DatabaseTimeout):
                psycopg2.connect(url)
            assert time.monotonic() - started < 3.0

        # A server that answers ends the wariness: waits are their usual length again.
        again = psycopg2.connect(f"{PG_ROOT}/postgres")
        again.cursor().execute("SELECT pg_sleep(1.5)")  # longer than a wary wait
        again.close()
    finally:
        psycopg2.extensions.set_wait_callback(None)


def test_a_connection_on_a_descriptor_above_1024_waits_like_any_other(deadlines):
    # A stream process holding thousands of client sockets opens its database connections on
    # descriptors that select() cannot watch.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-files limit ({hard}) is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        conn = psycopg2.connect(f"{PG_ROOT}/postgres")
        try:
            assert conn.fileno() > 1024
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        finally:
            conn.close()
    finally:
        for descriptor in filler:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
