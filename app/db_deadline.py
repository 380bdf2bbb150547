"""A client-side deadline on every wait for Postgres, for when the server is frozen.

statement_timeout is enforced by the server: a Postgres that is stopped, paging or cut off by a
partition enforces nothing, the socket stays open, and a blocking libpq call waits forever. So
the processes that serve requests and run work install a psycopg2 wait callback: libpq runs
non-blocking and every wait is a ``poll()`` that gives up at a deadline. Giving up raises
``DatabaseTimeout`` (an ``OperationalError``); psycopg2 then closes the connection and
SQLAlchemy drops it from the pool, so nothing waits on it again.

The deadline of a wait is the earliest of:

- a connect's ``connect_seconds``;
- a statement's ``statement_seconds`` plus a second of grace, so the server's own
  statement_timeout fires first whenever the server is alive to fire it;
- the current request's ``request_deadline`` (a monotonic time), so one API request waits on
  Postgres a bounded time in all, however many statements, reconnects and pings it makes;
- in a process that serves requests, ``wary_seconds`` for a while after a wait gave up (until
  one succeeds, or ``WARY_FOR_SECONDS`` pass): each request then finds out in a moment, not in
  seconds, that Postgres is still frozen, and the threads of the web stay free for the requests
  that do not need it (``/healthz``).
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import psycopg2
import psycopg2.extensions

# The server's statement_timeout should win over ours whenever the server can still act.
GRACE_SECONDS = 1.0
# How long a process stays wary after a wait gave up, unless a wait succeeds first, and how long
# a wait may take meanwhile (a live server answers a request's statements well within it).
WARY_FOR_SECONDS = 5.0
WARY_SECONDS = 0.5

_request_deadline: ContextVar[float | None] = ContextVar("database_deadline", default=None)


class DatabaseTimeout(psycopg2.OperationalError):
    """Postgres did not answer before the deadline."""


class DeadlineWait:
    """A psycopg2 wait callback giving up at the deadline described above."""

    def __init__(
        self, connect_seconds: float, statement_seconds: float, wary_seconds: float | None = None
    ) -> None:
        self.connect_seconds = connect_seconds
        self.statement_seconds = statement_seconds
        self.wary_seconds = wary_seconds
        # Shared by the threads of the process; a stale read costs one wait its full deadline.
        self._wary_until = 0.0

    def _deadline(self, started: float, connecting: bool) -> float:
        own = self.connect_seconds if connecting else self.statement_seconds + GRACE_SECONDS
        deadline = started + own
        request_deadline = _request_deadline.get()
        if request_deadline is not None:
            deadline = min(deadline, request_deadline)
        if self.wary_seconds is not None and started < self._wary_until:
            deadline = min(deadline, started + self.wary_seconds)
        return deadline

    def __call__(self, conn: psycopg2.extensions.connection) -> None:
        started = time.monotonic()
        connecting = conn.status == psycopg2.extensions.STATUS_SETUP
        deadline = self._deadline(started, connecting)
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                self._wary_until = 0.0
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._wary_until = time.monotonic() + WARY_FOR_SECONDS
                what = "connecting" if connecting else "waiting for an answer"
                raise DatabaseTimeout(f"Postgres gave no answer in time ({what})")
            if state == psycopg2.extensions.POLL_READ:
                wait_for(conn.fileno(), select.POLLIN, remaining)
            elif state == psycopg2.extensions.POLL_WRITE:
                wait_for(conn.fileno(), select.POLLOUT, remaining)
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")


def wait_for(fileno: int, events: int, seconds: float) -> None:
    """Wait until ``fileno`` is ready for ``events`` or ``seconds`` pass. poll(), not select():
    a process holding thousands of sockets (the stream process) has descriptors above
    select()'s limit of 1,024."""
    poller = select.poll()
    poller.register(fileno, events)
    poller.poll(seconds * 1000)


def make_wait_callback(
    connect_seconds: float, statement_seconds: float, wary_seconds: float | None = None
) -> Callable[[psycopg2.extensions.connection], None]:
    """A wait callback with the deadlines above."""
    return DeadlineWait(connect_seconds, statement_seconds, wary_seconds)


def install_deadlines(
    connect_seconds: float, statement_seconds: float, wary_seconds: float | None = None
) -> None:
    """Make every psycopg2 connection of this process wait with a deadline."""
    psycopg2.extensions.set_wait_callback(
        make_wait_callback(connect_seconds, statement_seconds, wary_seconds)
    )


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Within the block, no wait for Postgres lasts past ``seconds`` from now."""
    token = start_request_deadline(seconds)
    try:
        yield
    finally:
        end_request_deadline(token)


def start_request_deadline(seconds: float) -> object:
    """Start a deadline for the rest of this request; its token, for ``end_request_deadline``."""
    return _request_deadline.set(time.monotonic() + seconds)


def end_request_deadline(token: object) -> None:
    """The request is over: its deadline no longer applies."""
    _request_deadline.reset(token)  # type: ignore[arg-type]
