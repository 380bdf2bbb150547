"""How much work each scenario does: the full run's sizes and the smoke run's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sizes:
    deliveries: int = 20_000
    raw: int = 20_000
    naive: int = 20_000
    slow: int = 2_000
    noisy: int = 1_000
    hanging: int = 64
    ingest_seconds: int = 10
    e2e_seconds: int = 10
    dead_tenants: int = 20
    dead_jobs: int = 50
    healthy_jobs: int = 500
    backlog: int = 100_000
    due_batch: int = 500
    steady_seconds: int = 10
    stream_idle: int = 10_000
    stream_rate: int = 200
    stream_seconds: int = 10
    long_polls: int = 2_000
    retention_rows: int = 5_000_000
    fanout_events: int = 500
    ordering_keys: int = 1_000
    ordering_events: int = 10
    ordering_stuck_seconds: int = 60
    search_attempts: int = 1_000_000


SMOKE = Sizes(
    deliveries=120,
    raw=120,
    naive=60,
    slow=30,
    noisy=40,
    hanging=3,
    ingest_seconds=2,
    e2e_seconds=2,
    dead_tenants=2,
    dead_jobs=5,
    healthy_jobs=20,
    backlog=2_000,
    due_batch=50,
    steady_seconds=1,
    stream_idle=100,
    stream_rate=20,
    stream_seconds=2,
    long_polls=40,
    retention_rows=20_000,
    fanout_events=120,
    ordering_keys=20,
    ordering_events=3,
    ordering_stuck_seconds=3,
    search_attempts=4_000,
)
