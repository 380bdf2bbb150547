"""8. streams: web clients on one stream process.

- idle: ``stream_idle`` job event streams held open by a client process of its own
  (bench/stream_clients.py); the stream process's RSS before and after, per open stream, and
  the open-files limit it runs with.
- push: running jobs, each with its stream open, finished at ``stream_rate`` jobs/s for
  ``stream_seconds`` the way a job worker finishes them (``finish_job``, commit, announcement).
  From each commit to the terminal event at its client, p50/p99: alone (the reference), then with
  the idle streams open.
- long polls: the web's rate on ``GET /v1/jobs/{id}`` (wrk) alone, then while ``long_polls``
  waiters wait on running jobs; then those jobs are finished at the same rate: the same latency.

A measured client that never saw its job end is a lost terminal event. The clients talk to the
stream process directly, so the figures are its own, not a proxy's.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import uuid
from typing import Any

import psutil

from app.announce import Announcer, install_announcer
from app.clock import utcnow
from app.db import make_session_factory
from app.stream_tokens import StreamTokens
from bench import wrk
from bench.figures import ms, percentile, rate
from bench.outbox import make_tenant
from bench.stack import Bench
from tests.support import REPO
from workers.running import ClaimedJob, Outcome, finish_job

Jobs = list[tuple[uuid.UUID, uuid.UUID]]  # (job id, lease id)

CONNECT_SECONDS = 300  # opening ten thousand streams, each read from Postgres
WEB_CONNECTIONS = 16


def run(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    tenant_id, _, api_key = make_tenant(bench, "streams", None)
    stream = psutil.Process(bench.stack.processes["stream"].pid)
    measured = sizes.stream_rate * sizes.stream_seconds

    alone = push_round(bench, tenant_id, measured, "alone")

    rss_before = stream.memory_info().rss
    idle = Clients(
        bench,
        "idle",
        "sse",
        event_streams(bench, running_jobs(bench, tenant_id, sizes.stream_idle)),
    )
    try:
        rss_open = stream.memory_info().rss
        beside_idle = push_round(bench, tenant_id, measured, "beside-idle")
        idle_report = idle.report()
    finally:
        idle.close()

    job_url = f"{bench.stack.base_url}/v1/jobs/{running_jobs(bench, tenant_id, 1)[0][0]}"
    web_alone = wrk.get(
        job_url,
        seconds=max(2, sizes.stream_seconds),
        connections=WEB_CONNECTIONS,
        api_key=api_key,
    )
    polls, web_beside = long_poll_round(bench, tenant_id, job_url, api_key)

    limit = stream.rlimit(psutil.RLIMIT_NOFILE)
    return {
        "idle_streams": {
            "asked": sizes.stream_idle,
            "connected": idle.connected,
            "failed_to_connect": idle.failed,
            "still_open_at_end": idle_report["open"],
            "stream_rss_mb_before": round(rss_before / 2**20, 1),
            "stream_rss_mb_open": round(rss_open / 2**20, 1),
            "rss_kb_per_stream": round((rss_open - rss_before) / 1024 / max(1, idle.connected), 1),
            "open_files_limit": limit[0],
        },
        "push_alone": alone,
        "push_beside_idle": beside_idle,
        "p99_beside_idle_over_alone": round(beside_idle["p99_ms"] / alone["p99_ms"], 2)
        if alone["p99_ms"]
        else None,
        "long_polls": polls,
        "web_get_alone": web_alone,
        "web_get_beside_long_polls": web_beside,
        "web_rate_beside_over_alone": round(web_beside["per_second"] / web_alone["per_second"], 2)
        if web_alone["per_second"]
        else None,
    }


def running_jobs(
    bench: Bench, tenant_id: uuid.UUID, count: int
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``count`` jobs as a job worker holds them while they run (leased for a day, so no sweep
    takes them back): their ids and lease ids."""
    rows = bench.sql(
        """
        INSERT INTO job (id, tenant_id, type, status, input, attempts, max_attempts,
                         locked_until, lease_id, enqueued_at, started_at, created_at)
        SELECT gen_random_uuid(), :tenant, 'sleep', 'running', '{"seconds": 3600}', 1, 3,
               now() + interval '1 day', gen_random_uuid(), now(), now(), now()
        FROM generate_series(1, :count)
        RETURNING id, lease_id
        """,
        tenant=tenant_id,
        count=count,
    )
    return [(row[0], row[1]) for row in rows]


def event_streams(bench: Bench, jobs: Jobs) -> list[tuple[str, str]]:
    return urls(bench, jobs, "/events")


def long_poll_urls(bench: Bench, jobs: Jobs) -> list[tuple[str, str]]:
    return urls(bench, jobs, "")


def urls(bench: Bench, jobs: Jobs, suffix: str) -> list[tuple[str, str]]:
    """Each job's stream URL with its token, on the stream process itself."""
    tokens = StreamTokens(bench.settings, bench.session_factory)
    base = f"{bench.stack.stream_base_url}/stream/v1/jobs"
    return [
        (str(job_id), f"{base}/{job_id}{suffix}?token={tokens.make(job_id)}") for job_id, _ in jobs
    ]


def push_round(bench: Bench, tenant_id: uuid.UUID, count: int, name: str) -> dict[str, Any]:
    """``count`` running jobs watched by their streams, finished at the scenario's rate."""
    jobs = running_jobs(bench, tenant_id, count)
    clients = Clients(bench, f"push-{name}", "sse", event_streams(bench, jobs))
    try:
        finished = finish_at_rate(bench, jobs)
        return arrivals(clients, finished)
    finally:
        clients.close()


def long_poll_round(
    bench: Bench, tenant_id: uuid.UUID, job_url: str, api_key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Long-poll waiters on running jobs: the web's figures (wrk reading a job) while they wait,
    then their latency as their jobs are finished at the scenario's rate. The two are measured
    apart, so the web's figure shows what the open waiters cost it, not the CPU that finishing
    jobs takes on the same two cores."""
    sizes = bench.sizes
    jobs = running_jobs(bench, tenant_id, sizes.long_polls)
    clients = Clients(bench, "long-polls", "poll", long_poll_urls(bench, jobs))
    try:
        web = wrk.get(
            job_url,
            seconds=max(2, sizes.stream_seconds),
            connections=WEB_CONNECTIONS,
            api_key=api_key,
        )
        still_waiting = clients.report()["open"]
        if still_waiting < clients.connected:
            bench.problems.append(
                f"streams: {clients.connected - still_waiting} long polls ended before their job"
            )
        return arrivals(clients, finish_at_rate(bench, jobs)), web
    finally:
        clients.close()


def finish_at_rate(bench: Bench, jobs: Jobs, per_second: float | None = None) -> dict[str, Any]:
    """End each job as a job worker does, at ``per_second`` (the scenario's rate): the moment
    each commit began, and the rate reached."""
    per_second = per_second or bench.sizes.stream_rate
    factory = make_session_factory(bench.engine, bench.producer.sender())
    install_announcer(factory, Announcer(bench.settings.redis_url))
    committed: dict[str, float] = {}
    started = time.perf_counter()
    for number, (job_id, lease_id) in enumerate(jobs):
        delay = started + number / per_second - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with factory() as session:
            claimed = ClaimedJob(job_id, "sleep", {}, lease_id, 1)
            finish_job(session, claimed, utcnow(), Outcome(result={"n": number}))
            committed[str(job_id)] = time.time()
            session.commit()
    elapsed = time.perf_counter() - started
    return {"committed": committed, "per_second": rate(len(jobs), elapsed)}


def arrivals(clients: Clients, finished: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Wait for every finished job's client to see the end; latency from commit to arrival."""
    committed: dict[str, float] = finished["committed"]
    deadline = time.monotonic() + timeout
    report = clients.report()
    while report["ended"] < len(committed) and time.monotonic() < deadline:
        time.sleep(0.5)
        report = clients.report()
    ended_at: dict[str, float] = report["ended_at"]
    latencies = [ended_at[job] - at for job, at in committed.items() if job in ended_at]
    return {
        "jobs": len(committed),
        "finished_per_second": finished["per_second"],
        "clients_connected": clients.connected,
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(max(latencies, default=0.0)),
        "lost_terminal_events": len(committed) - len(latencies),
    }


class Clients:
    """A bench/stream_clients.py process holding one client per job until closed."""

    def __init__(self, bench: Bench, name: str, kind: str, jobs: list[tuple[str, str]]) -> None:
        jobs_file = bench.stack.log_dir / f"clients-{name}.txt"
        jobs_file.write_text("".join(f"{job_id} {url}\n" for job_id, url in jobs))
        self._log = open(bench.stack.log_dir / f"clients-{name}.log", "w")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.stream_clients",
                "--kind",
                kind,
                "--jobs",
                str(jobs_file),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        try:
            first = self._line(CONNECT_SECONDS)
        except Exception:
            self.close()
            raise
        self.connected: int = first["connected"]
        self.failed: int = first["failed"]
        if self.failed:
            bench.problems.append(
                f"streams: {self.failed} {kind} clients of {name} never connected"
            )

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the stream clients answered nothing within {timeout} s")
        return json.loads(line)

    def report(self) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write("\n")
        self._process.stdin.flush()
        return self._line(30)

    def close(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._log.close()
