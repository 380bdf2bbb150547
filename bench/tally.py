"""What arrived: at the receiver (requests, distinct webhook-ids, duplicates, losses) and in
Postgres (the attempts logged)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.stack import Bench


def tally(bench: Bench, path: str, expected: set[str]) -> dict[str, Any]:
    """What reached ``path``: requests, unique webhook-ids, duplicates, losses, and the
    first arrival of each id. A loss is written down as a problem of the run."""
    records = bench.receiver.records(path)
    first: dict[str, float] = {}
    for wid, at in records:
        first.setdefault(wid, at)
    unique = set(first)
    lost = len(expected - unique)
    if lost:
        bench.problems.append(f"{path}: {lost} of {len(expected)} never arrived")
    return {
        "requests": len(records),
        "unique_ids": len(unique & expected),
        "duplicates": len(records) - len(unique),
        "lost": lost,
        "_first": first,
    }


def submit_to_arrival(
    bench: Bench, path: str, sent_at: dict[str, float], ids: dict[str, str]
) -> tuple[dict[str, Any], list[float]]:
    """What reached ``path`` of the jobs sent at ``sent_at`` (job id to unix time; ``ids``
    maps a job id to its webhook-id), and each one's seconds from its request to its first
    arrival. An accepted job that raised no event is written down as a problem of the run."""
    expected = {ids[job] for job in sent_at if job in ids}
    counted = tally(bench, path, expected)
    arrived = counted.pop("_first")
    latencies = [
        arrived[ids[job]] - sent
        for job, sent in sent_at.items()
        if job in ids and ids[job] in arrived
    ]
    if len(expected) < len(sent_at):
        bench.problems.append(
            f"{path}: {len(sent_at) - len(expected)} accepted jobs raised no event"
        )
    return counted, latencies


def attempts_logged(bench: Bench, tenant_id: uuid.UUID, wait_for: int, timeout: float) -> dict:
    """Attempts in Postgres for the tenant's deliveries, once ``wait_for`` succeeded."""
    deadline = time.monotonic() + timeout
    while True:
        row = bench.sql(
            "SELECT count(*) FILTER (WHERE a.succeeded), count(*) FROM delivery_attempt a"
            " JOIN delivery d ON d.id = a.delivery_id WHERE d.tenant_id = :t",
            t=tenant_id,
        )[0]
        if row[0] >= wait_for or time.monotonic() > deadline:
            return {"attempts_logged": row[1], "attempts_succeeded": row[0]}
        time.sleep(0.2)


def settled_count(count: Callable[[], int], quiet_seconds: float = 1.0, timeout: float = 30) -> int:
    """``count()`` once it has stopped changing for ``quiet_seconds``: a load generator stops
    with requests still in the server, which commit after it has gone."""
    deadline = time.monotonic() + timeout
    last = count()
    while time.monotonic() < deadline:
        time.sleep(quiet_seconds)
        now = count()
        if now == last:
            return now
        last = now
    return last
