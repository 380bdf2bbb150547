"""The benchmark's scenarios, in the order a full run takes them; each module's ``run`` takes the
running Bench and returns its figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.scenarios import (
    backlog,
    dead,
    e2e,
    fanout,
    ingest,
    noisy,
    ordering,
    retention,
    search,
    slow,
    streams,
    throughput,
)
from bench.stack import Bench

SCENARIOS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "throughput": throughput.run,
    "slow": slow.run,
    "noisy": noisy.run,
    "ingest": ingest.run,
    "e2e": e2e.run,
    "backlog": backlog.run,
    "streams": streams.run,
    "retention": retention.run,
    "fanout": fanout.run,
    "ordering": ordering.run,
    "search": search.run,
    # Last: its receivers hold connections until the delivery timeout.
    "dead": dead.run,
}
