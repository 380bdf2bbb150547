"""The one clock the code reads, so tests and callers can pass another in its place.

Leases, due times and sweeps are compared across hosts, so they must come from one clock, and
Postgres' is the one every process already shares. A process that ``follow``s Postgres keeps the
offset from its own clock to ``clock_timestamp()`` (measured at once, then every
``REFRESH_SECONDS`` by a daemon thread) and ``utcnow`` adds it: a host whose clock runs minutes
fast then neither takes over live leases nor sends retries early. A process that follows nothing
(unit tests, the CLI) reads its own clock.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

# Often enough that a host clock stepped or drifting meanwhile is soon corrected; one query per
# process per interval costs nothing.
REFRESH_SECONDS = 30.0
# Readings per measurement, of which the quickest counts: a process measures as it starts, when
# the machine is busiest, and one reading that waited there can be off by half its wait.
READINGS = 3
# After a failed measurement (Postgres away), look again this soon rather than a whole interval.
RETRY_SECONDS = 5.0
# A host this far off is worth a line in the log: it would misbehave without the offset.
NOTABLE_OFFSET = timedelta(seconds=1)

_host_skew = timedelta(0)  # BOOMERANG_CLOCK_SKEW_SECONDS: a fast or slow host, for tests
_offset = timedelta(0)  # Postgres' clock minus this host's
_read: Callable[[], datetime] | None = None
_every_seconds = REFRESH_SECONDS
_stop = threading.Event()
_fork_hook_installed = False


def host_now() -> datetime:
    """This host's own clock (shifted by the test-only skew), timezone-aware, in UTC."""
    return datetime.now(UTC) + _host_skew


def utcnow() -> datetime:
    """The current time in UTC: Postgres' clock when this process follows it, else the host's."""
    return host_now() + _offset


def offset() -> timedelta:
    """What ``utcnow`` adds to the host's clock: Postgres' clock minus this host's."""
    return _offset


def set_host_skew(seconds: float) -> None:
    """Run this process's own clock ``seconds`` ahead (or behind): a badly set host, for tests."""
    global _host_skew
    _host_skew = timedelta(seconds=seconds)


def measure_offset(read: Callable[[], datetime], tries: int = READINGS) -> timedelta:
    """Postgres' clock minus this host's, from the quickest of ``tries`` readings. Each takes
    the host's time halfway through its query, so a reading that waited (on a connect, or on a
    busy machine) can be off by half its wait, either way; the quickest is the truest."""
    best: tuple[timedelta, timedelta] | None = None
    for _ in range(max(1, tries)):
        before = host_now()
        try:
            theirs = read()
        except Exception:
            if best is None:
                raise
            break  # Postgres went away meanwhile: the readings already taken still hold
        took = host_now() - before
        if best is None or took < best[0]:
            best = (took, theirs - (before + took / 2))
    assert best is not None
    return best[1]


def refresh() -> bool:
    """Measure the offset again now; False (keeping the last one) if the database did not
    answer."""
    global _offset
    if _read is None:
        return False
    try:
        measured = measure_offset(_read)
    except Exception as exc:
        log.warning("could not read Postgres' clock; keeping the last offset: %s", exc)
        return False
    if abs(measured - _offset) > NOTABLE_OFFSET:
        log.warning(
            "this host's clock is %.1f s %s Postgres'; using Postgres' time",
            abs(measured.total_seconds()),
            "behind" if measured > timedelta(0) else "ahead of",
        )
    _offset = measured
    return True


def database_time(engine: Engine) -> Callable[[], datetime]:
    """A reader of Postgres' clock through ``engine``: ``clock_timestamp()``, which, unlike
    ``now()``, is not frozen at the start of a transaction."""

    def read() -> datetime:
        with engine.connect() as connection:
            value = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value.astimezone(UTC)

    return read


def follow(read: Callable[[], datetime], every_seconds: float = REFRESH_SECONDS) -> None:
    """Take time from ``read`` from now on: measured now, then every ``every_seconds`` by a
    daemon thread, which processes forked later start again for themselves."""
    global _read, _every_seconds, _fork_hook_installed
    stop_following()
    _read = read
    _every_seconds = every_seconds
    refresh()
    _start_refresher()
    if not _fork_hook_installed:
        # A thread does not survive fork(): a gunicorn or Celery child starts its own, keeping
        # the offset it inherited meanwhile.
        os.register_at_fork(after_in_child=_restart_in_child)
        _fork_hook_installed = True


def follow_database(engine: Engine, host_skew_seconds: float = 0.0) -> None:
    """``follow`` Postgres' clock through ``engine``; ``host_skew_seconds`` as ``set_host_skew``."""
    set_host_skew(host_skew_seconds)
    follow(database_time(engine))


def stop_following() -> None:
    """Read the host's own clock again (tests): the refresher stops, the offset is zero."""
    global _read, _offset, _stop
    _stop.set()
    _stop = threading.Event()
    _read = None
    _offset = timedelta(0)


def _start_refresher() -> None:
    stop = _stop
    threading.Thread(target=_refresh_until, args=(stop,), name="clock", daemon=True).start()


def _refresh_until(stop: threading.Event) -> None:
    wait = _every_seconds
    while not stop.wait(wait):
        wait = _every_seconds if refresh() else min(RETRY_SECONDS, _every_seconds)


def _restart_in_child() -> None:
    global _stop
    _stop = threading.Event()  # the parent's event may be mid-use by its own thread
    if _read is not None:
        _start_refresher()
