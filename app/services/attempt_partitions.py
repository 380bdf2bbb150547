"""The attempt log's daily partitions: made ahead of need, dropped whole once past retention.

``delivery_attempt`` is partitioned by RANGE on ``attempted_at``, one partition per UTC day
(``delivery_attempt_YYYYMMDD``), plus a DEFAULT partition for any row no day's partition takes.
Dropping a day's table costs a catalogue change and an unlink, where deleting its rows costs a
WAL record and a dead tuple per row (170 million a day at 2,000 deliveries/s).

The guarantee: a partition is dropped only when its whole day is older than the cutoff
(now - ``BOOMERANG_RETENTION_DAYS``), and the one straddling the cutoff is kept whole. So nothing
younger than retention is lost, and after a pass nothing older than retention + 1 day survives.
Rows that landed in the DEFAULT partition are deleted in batches, row by row, as before.

Every function here takes a session and never commits: the prune task commits after each
partition change, so the locks a change takes are held for that change only.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.orm import Session

PARENT = "delivery_attempt"
DEFAULT_PARTITION = "delivery_attempt_default"
# Today and this many days after it always have a partition, so a prune that fails (or a beat
# that is down) for up to this long never sends a day's attempts to the DEFAULT partition.
DAYS_AHEAD = 3
# Dropping a partition takes an ACCESS EXCLUSIVE lock on delivery_attempt; attaching one takes
# ACCESS EXCLUSIVE on the DEFAULT partition (and SHARE UPDATE EXCLUSIVE on delivery_attempt). A
# lock request waits behind every transaction using the table, and every later INSERT of an
# attempt queues behind the request: waiting long would stall delivery. So a change gives up
# quickly and the next run tries again; DAYS_AHEAD leaves days of room for that.
DDL_LOCK_TIMEOUT = "500ms"

# Held by each partition change until it commits, so two prunes at once (a duplicated beat
# message, two beats leading for a moment) take turns, and the second sees what the first did.
# Spelled out, so no other advisory lock in the database takes it.
_CHANGE_LOCK = int.from_bytes(b"bmr-part", "big")

_DAY_NAME = re.compile(rf"^{PARENT}_(\d{{8}})$")


def partition_name(day: date) -> str:
    """The name of ``day``'s partition."""
    return f"{PARENT}_{day:%Y%m%d}"


def is_attempt_partition(name: str) -> bool:
    """Whether ``name`` is one of the attempt log's partitions (which no model describes)."""
    return name == DEFAULT_PARTITION or _DAY_NAME.match(name) is not None


def _bound(day: date) -> str:
    # A literal in UTC, so the bound does not depend on the session's TimeZone.
    return f"'{datetime.combine(day, time(), UTC).isoformat()}'"


def _rowcount(result: Result[Any]) -> int:
    # DML results are CursorResults, which carry the number of rows affected.
    return cast(CursorResult[Any], result).rowcount


def _begin_change(session: Session) -> None:
    session.execute(
        text("SELECT set_config('lock_timeout', :timeout, true)"), {"timeout": DDL_LOCK_TIMEOUT}
    )
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_LOCK})


def day_partitions(session: Session) -> dict[date, str]:
    """The existing day partitions, by day (the DEFAULT partition is not among them)."""
    names = session.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    )
    found = {}
    for name in names:
        match = _DAY_NAME.match(name)
        if match:
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return found


def days_to_create(session: Session, now: datetime) -> list[date]:
    """Today and the DAYS_AHEAD days after it (UTC) that have no partition yet."""
    today = now.astimezone(UTC).date()
    existing = day_partitions(session)
    wanted = (today + timedelta(days=ahead) for ahead in range(DAYS_AHEAD + 1))
    return [day for day in wanted if day not in existing]


def create_partition(session: Session, day: date) -> int:
    """Add ``day``'s partition; the rows the DEFAULT partition held for that day move into it.

    Built as a table of its own and then attached: ATTACH needs only a SHARE UPDATE EXCLUSIVE
    lock on delivery_attempt (CREATE ... PARTITION OF takes ACCESS EXCLUSIVE), and it is the only
    way to bring along rows the DEFAULT partition already holds for that day (which would make
    CREATE ... PARTITION OF fail). Returns how many rows moved, normally 0 (and 0 when another
    prune made it meanwhile).
    """
    name = partition_name(day)
    low, high = _bound(day), _bound(day + timedelta(days=1))
    _begin_change(session)
    if session.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is not None:
        return 0
    session.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    moved = _rowcount(
        session.execute(
            text(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
                f"WHERE attempted_at >= {low} AND attempted_at < {high} RETURNING *) "
                f"INSERT INTO {name} SELECT * FROM moved"
            )
        )
    )
    # Attaching builds the partition's indexes and key from the parent's and checks the rows.
    session.execute(
        text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})")
    )
    return moved


def retention_cutoff(now: datetime, retention_days: int) -> datetime:
    """Attempts older than this are past retention."""
    return now - timedelta(days=retention_days)


def expired_partitions(session: Session, cutoff: datetime) -> list[str]:
    """Day partitions whose whole day lies before ``cutoff``; the one straddling it stays."""
    return [
        name
        for day, name in sorted(day_partitions(session).items())
        if datetime.combine(day + timedelta(days=1), time(), UTC) <= cutoff
    ]


def drop_partition(session: Session, name: str) -> None:
    """Drop one day partition with all its rows."""
    if not _DAY_NAME.match(name):
        raise ValueError(f"not a day partition of {PARENT}: {name}")
    _begin_change(session)
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))


def prune_default_batch(session: Session, cutoff: datetime, batch: int) -> int:
    """Delete at most ``batch`` rows older than ``cutoff`` from the DEFAULT partition."""
    return _rowcount(
        session.execute(
            text(
                f"DELETE FROM {DEFAULT_PARTITION} WHERE (id, attempted_at) IN ("
                f"SELECT id, attempted_at FROM {DEFAULT_PARTITION} "
                "WHERE attempted_at < :cutoff LIMIT :batch)"
            ),
            {"cutoff": cutoff, "batch": batch},
        )
    )
