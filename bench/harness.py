"""``python -m bench``: the delivery pipeline on the real stack, next to its reference points.

Starts gunicorn, both Celery workers and beat (as in production: the delivery worker on a thread
pool) against a scratch database and a private redis-server, plus an aiohttp receiver in its own
process, and runs five scenarios in one go:

1. throughput: N deliveries to a fast receiver, beside (a) a raw aiohttp client POSTing the same
   signed bodies and (b) a naive one-Celery-task-per-callback sender (bench/naive/);
2. slow: M deliveries to a receiver that takes 0.5 s per request;
3. noisy: one tenant's callback never answers while another's gets K deliveries;
4. ingest: POST /v1/jobs under concurrent load, beside a trivial Flask app on the same gunicorn;
5. backlog: B deliveries waiting for a retry: worker memory, sweep time, Redis queue length.

Deliveries for 1-3 are made the way a finished job makes them: the real outbox
(``app.services.events.publish``) writes a finished job, its message and its delivery, and the
deliver task is enqueued after the commit; the workers then claim, POST and log every attempt in
Postgres exactly as in production. The backlog of scenario 5 is bulk-inserted in SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis
from sqlalchemy import text

from bench.common import BIN, REPO, Processes, ReceiverClient, percentile, wait_http
from tests.conftest import make_settings, recreate_database
from tests.e2e.stack import RedisServer, Stack, free_port

SCENARIOS = ("throughput", "slow", "noisy", "ingest", "backlog")
DEFAULT_JSON = REPO / "artifacts" / "bench.json"


@dataclass
class Sizes:
    deliveries: int = 20_000
    raw: int = 20_000
    naive: int = 20_000
    slow: int = 2_000
    noisy: int = 1_000
    hanging: int = 64
    ingest: int = 2_000
    backlog: int = 100_000
    due_batch: int = 500
    steady_seconds: int = 10


SMOKE = Sizes(
    deliveries=120,
    raw=120,
    naive=60,
    slow=30,
    noisy=40,
    hanging=3,
    ingest=60,
    backlog=2_000,
    due_batch=50,
    steady_seconds=1,
)


# Jobs, messages and deliveries as the outbox writes them; ``ord`` keeps the plan's order in the
# queue (a delivery is claimed oldest-due first).
_PUBLISH = """
WITH plan AS (
    SELECT p.tenant_id, p.callback_id, p.ord,
           gen_random_uuid() AS job_id, gen_random_uuid() AS message_id
    FROM unnest(CAST(:tenants AS uuid[]), CAST(:callbacks AS uuid[]))
         WITH ORDINALITY AS p(tenant_id, callback_id, ord)
), jobs AS (
    INSERT INTO job (id, tenant_id, type, status, input, result, attempts, max_attempts,
                     started_at, finished_at, created_at)
    SELECT job_id, tenant_id, 'echo', 'succeeded', jsonb_build_object('n', ord),
           jsonb_build_object('n', ord), 1, 3, now(), now(), now()
    FROM plan
), messages AS (
    INSERT INTO message (id, tenant_id, job_id, event_type, body, created_at)
    SELECT message_id, tenant_id, job_id, 'job.succeeded',
           json_build_object(
               'type', 'job.succeeded', 'timestamp', now(),
               'data', json_build_object(
                   'id', job_id, 'type', 'echo', 'status', 'succeeded',
                   'input', json_build_object('n', ord), 'result', json_build_object('n', ord),
                   'error', NULL, 'finished_at', now()))::text,
           now()
    FROM plan
)
INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status, attempt_count,
                      next_attempt_at, created_at)
SELECT gen_random_uuid(), plan.tenant_id, plan.message_id, plan.callback_id, callback.url,
       'pending', 0, now() + plan.ord * interval '1 microsecond', now()
FROM plan JOIN callback ON callback.id = plan.callback_id
RETURNING message_id
"""


class BenchStack(Stack):
    """The e2e Stack with the production number of delivery processes (or the one asked for)."""

    delivery_processes = 2

    def commands(self) -> dict[str, list[str]]:
        commands = super().commands()
        deliveries = commands["deliveries"]
        deliveries[deliveries.index("--concurrency") + 1] = str(self.delivery_processes)
        return commands


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def speed(count: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    """The rate and the p50/p99 latency every scenario reports."""
    return {
        "per_second": rate(count, seconds),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, log_dir: Path) -> None:
        self.args = args
        self.sizes = sizes
        self.log_dir = log_dir
        self.processes = Processes(log_dir)
        self.redis_server = RedisServer(log_dir)
        self.stack: BenchStack | None = None
        self.results: dict[str, Any] = {}
        self.problems: list[str] = []

    # -- setup -----------------------------------------------------------------------------------

    def start(self) -> None:
        database = self.args.database
        self.redis_server.start()
        env = {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": self.redis_server.url,
            "BOOMERANG_ALLOW_PRIVATE_NETWORKS": "true",
            # The ingest scenario measures the API, not the per-tenant rate limit.
            "BOOMERANG_RATE_LIMIT": "10000000 per minute",
        }
        env["BOOMERANG_WEB_WORKERS"] = str(self.args.web_workers)
        env["BOOMERANG_WEB_THREADS"] = str(self.args.web_threads)
        if self.args.delivery_concurrency:
            env["BOOMERANG_DELIVERY_CONCURRENCY"] = str(self.args.delivery_concurrency)
        if self.args.smoke:
            # The noisy neighbour holds each connection until our timeout: keep it short.
            env |= {
                "BOOMERANG_CONNECT_TIMEOUT_SECONDS": "1",
                "BOOMERANG_READ_TIMEOUT_SECONDS": "2",
                "BOOMERANG_TOTAL_TIMEOUT_SECONDS": "3",
            }
        recreate_database(make_settings(database, 0, **env))
        from app.db import make_engine, make_session_factory
        from config.settings import Settings
        from workers.celery_app import create_celery, task_sender

        self.settings = Settings.from_env(env)
        self.env = env
        self.celery = create_celery(self.settings)
        self.engine = make_engine(self.settings, pool_size=4, max_overflow=4)
        self.session_factory = make_session_factory(self.engine, task_sender(self.celery))
        self.sql("CREATE TABLE IF NOT EXISTS bench_marker (x int)")
        from bench.naive.app import TABLE_DDL

        self.sql(TABLE_DDL)

        receiver_port = free_port()
        receiver = self.processes.start(
            "receiver",
            [sys.executable, "-m", "bench.receiver", "--port", str(receiver_port)],
            {},
        )
        self.receiver = ReceiverClient(receiver_port)
        wait_http(self.receiver.url("/_health"), 30, receiver)

        self.stack = BenchStack(env=dict(env), log_dir=self.log_dir)
        self.stack.delivery_processes = self.args.delivery_processes
        self.stack.env["BOOMERANG_PUBLIC_URL"] = self.stack.base_url
        self.stack.start()

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        self.processes.stop_all()
        self.redis_server.stop()
        if hasattr(self, "engine"):
            self.engine.dispose()

    def sql(self, statement: str, **params: Any) -> list:
        with self.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    # -- helpers ---------------------------------------------------------------------------------

    def tenant(self, name: str, path: str | None) -> tuple[uuid.UUID, uuid.UUID | None, str]:
        """A tenant, with a callback to ``path`` on the receiver; (tenant, callback, api key)."""
        from app.services.callbacks import create_callback
        from app.services.tenants import create_tenant

        with self.session_factory() as session:
            created = create_tenant(session, name)
            callback_id = None
            if path is not None:
                callback = create_callback(
                    session, created.tenant, {"url": self.receiver.url(path)}, self.settings
                )
                callback_id = callback.id
            session.commit()
            return created.tenant.id, callback_id, created.api_key

    def publish(self, plan: list[tuple[uuid.UUID, uuid.UUID]]) -> tuple[float, dict[str, float]]:
        """For each (tenant, callback), in order: a finished echo job, its job.succeeded message
        and a pending delivery, written in one statement and committed, then one wake, as the
        outbox sends after a commit. (The ORM outbox costs the publisher about 3 ms a job; this
        measures delivery, not this process.) The commit time, and each webhook-id's."""
        rows = self.sql(
            _PUBLISH,
            tenants=[str(tenant) for tenant, _ in plan],
            callbacks=[str(callback) for _, callback in plan],
        )
        committed = time.time()
        self.celery.boomerang.waker.wake()
        return committed, {f"msg_{row[0].hex}": committed for row in rows}

    def created_at(self, tenant_id: uuid.UUID) -> dict[str, float]:
        rows = self.sql(
            "SELECT id, extract(epoch FROM created_at) FROM message WHERE tenant_id = :t",
            t=tenant_id,
        )
        return {f"msg_{row[0].hex}": float(row[1]) for row in rows}

    def tally(self, path: str, expected: set[str]) -> dict[str, Any]:
        """What reached ``path``: requests, unique webhook-ids, duplicates, losses, and the
        first arrival of each id."""
        records = self.receiver.records(path)
        first: dict[str, float] = {}
        for wid, at in records:
            first.setdefault(wid, at)
        unique = set(first)
        lost = len(expected - unique)
        if lost:
            self.problems.append(f"{path}: {lost} of {len(expected)} never arrived")
        return {
            "requests": len(records),
            "unique_ids": len(unique & expected),
            "duplicates": len(records) - len(unique),
            "lost": lost,
            "_first": first,
        }

    def attempts_logged(self, tenant_id: uuid.UUID, wait_for: int, timeout: float) -> dict:
        """Attempts in Postgres for the tenant's deliveries, once ``wait_for`` succeeded."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.sql(
                "SELECT count(*) FILTER (WHERE a.succeeded), count(*) FROM delivery_attempt a"
                " JOIN delivery d ON d.id = a.delivery_id WHERE d.tenant_id = :t",
                t=tenant_id,
            )[0]
            if row[0] >= wait_for or time.monotonic() > deadline:
                return {"attempts_logged": row[1], "attempts_succeeded": row[0]}
            time.sleep(0.2)

    def run(self, name: str, scenario: Callable[[], dict[str, Any]]) -> None:
        print(f"-- {name} ...", flush=True)
        started = time.monotonic()
        try:
            result = scenario()
        except Exception as exc:
            self.problems.append(f"{name}: {type(exc).__name__}: {exc}")
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["scenario_seconds"] = round(time.monotonic() - started, 1)
        self.results[name] = result
        print(f"   {json.dumps(result)}", flush=True)

    # -- 1. throughput ---------------------------------------------------------------------------

    def throughput(self) -> dict[str, Any]:
        n = self.sizes.deliveries
        path = "/fast/throughput"
        tenant_id, callback_id, _ = self.tenant("throughput", path)
        assert callback_id is not None
        started = time.time()
        t0, created = self.publish([(tenant_id, callback_id)] * n)
        published = time.time() - started
        self.receiver.wait_unique(path, n, timeout=60 + n / 40)
        tally = self.tally(path, set(created))
        first = tally.pop("_first")
        last = max(first.values(), default=t0)
        latencies = [first[w] - created[w] for w in first if w in created]
        ours = {
            "deliveries": n,
            "delivery_processes": self.args.delivery_processes,
            "in_flight_per_process": self.settings.delivery_concurrency,
            "publish_seconds": round(published, 1),
            "seconds": round(last - t0, 2),
            **speed(len(first), last - t0, latencies),
            **tally,
            **self.attempts_logged(tenant_id, len(first), 30),
        }
        # A burst's latency is mostly its own queue; the latency that matters is at a steady
        # rate the engine can sustain: half the burst rate, as the target puts it.
        ours["steady"] = self.steady(tenant_id, callback_id, path, ours["per_second"] / 2)
        bodies = self.signed_bodies(tenant_id, callback_id)
        raw = self.raw_limit(bodies[: self.sizes.raw])
        naive = self.naive(bodies[: self.sizes.naive])
        ours["x_raw"] = round(ours["per_second"] / raw["per_second"], 3) if raw["per_second"] else 0
        ours["x_naive"] = (
            round(ours["per_second"] / naive["per_second"], 3) if naive["per_second"] else 0
        )
        return {"boomerang": ours, "raw_aiohttp": raw, "naive_celery": naive}

    def steady(
        self, tenant_id: uuid.UUID, callback_id: uuid.UUID, path: str, per_second: float
    ) -> dict[str, Any]:
        """Publish at ``per_second`` in 20 ms ticks for ``steady_seconds``; latency from each
        commit to its receipt."""
        tick = 0.02
        seconds = self.sizes.steady_seconds
        sent: dict[str, float] = {}
        owed = 0.0
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < seconds:
            owed += per_second * tick
            count, owed = int(owed), owed - int(owed)
            if count:
                sent.update(self.publish([(tenant_id, callback_id)] * count)[1])
            ticks += 1
            time.sleep(max(0.0, started + ticks * tick - time.monotonic()))
        self.receiver.wait_unique(path, self.sizes.deliveries + len(sent), timeout=60)
        tally = self.tally(path, set(sent))
        first = tally.pop("_first")
        latencies = [first[w] - sent[w] for w in first if w in sent]
        return {
            "target_per_second": round(per_second, 1),
            "deliveries": len(sent),
            **speed(len(latencies), seconds, latencies),
            **{k: v for k, v in tally.items() if k in ("duplicates", "lost")},
        }

    def signed_bodies(self, tenant_id: uuid.UUID, callback_id: uuid.UUID) -> list[tuple]:
        from app.signing import sign_webhook

        secret = self.sql("SELECT secret FROM callback WHERE id = :c", c=callback_id)[0][0]
        rows = self.sql("SELECT id, body FROM message WHERE tenant_id = :t", t=tenant_id)
        now = utcnow()
        out = []
        for message_id, body in rows:
            wid = f"msg_{message_id.hex}"
            headers = {
                "content-type": "application/json",
                "webhook-id": wid,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": sign_webhook([secret], wid, now, body),
            }
            out.append((wid, body, headers))
        return out

    def raw_limit(self, bodies: list[tuple]) -> dict[str, Any]:
        """(a) aiohttp POSTing the same signed bodies as fast as it can: no queue, no DB."""
        path = "/fast/raw"
        url = self.receiver.url(path)
        concurrency = self.args.raw_concurrency
        latencies: list[float] = []
        errors = 0

        async def go() -> float:
            nonlocal errors
            queue = list(reversed(bodies))
            connector = aiohttp.TCPConnector(limit=concurrency)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

                async def worker() -> None:
                    nonlocal errors
                    while queue:
                        _wid, body, headers = queue.pop()
                        sent = time.perf_counter()
                        try:
                            async with client.post(url, data=body.encode(), headers=headers) as r:
                                await r.read()
                                if r.status != 201:
                                    errors += 1
                        except (aiohttp.ClientError, TimeoutError):
                            errors += 1
                        latencies.append(time.perf_counter() - sent)

                t0 = time.time()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return t0

        t0 = asyncio.run(go())
        tally = self.tally(path, {wid for wid, _, _ in bodies})
        first = tally.pop("_first")
        last = max(first.values(), default=t0)
        return {
            "deliveries": len(bodies),
            "connections": concurrency,
            "seconds": round(last - t0, 2),
            **speed(len(first), last - t0, latencies),
            "latency_from": "request sent",
            "errors": errors,
            **tally,
        }

    def naive(self, bodies: list[tuple]) -> dict[str, Any]:
        """(b) one Celery task per callback: requests.post, autoretry_for, an INSERT per attempt,
        on a prefork worker with its own queue and Redis database."""
        path = "/fast/naive"
        url = self.receiver.url(path)
        broker = self.redis_server.url.rsplit("/", 1)[0] + "/1"
        env = {"NAIVE_BROKER_URL": broker, "NAIVE_DATABASE_URL": self.env["DATABASE_URL"]}
        concurrency = self.args.naive_concurrency
        worker = self.processes.start(
            "naive-worker",
            [
                str(BIN / "celery"),
                "-A",
                "bench.naive.app",
                "worker",
                "-Q",
                "naive",
                "--pool",
                "prefork",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "WARNING",
                "-n",
                f"naive-{os.getpid()}@%h",
            ],
            env,
        )
        try:
            os.environ.update(env)
            from bench.naive.app import TASK
            from bench.naive.app import app as naive_app

            naive_app.conf.broker_url = broker
            self.wait_naive_ready(naive_app, worker)
            sent_at: dict[str, float] = {}
            t0 = time.time()
            with naive_app.producer_or_acquire() as producer:
                for wid, body, headers in bodies:
                    sent_at[wid] = time.time()
                    naive_app.send_task(
                        TASK, args=(url, body, headers), queue="naive", producer=producer
                    )
            self.receiver.wait_unique(path, len(bodies), timeout=60 + len(bodies) / 20)
            tally = self.tally(path, set(sent_at))
            first = tally.pop("_first")
            last = max(first.values(), default=t0)
            latencies = [first[w] - sent_at[w] for w in first if w in sent_at]
            deadline = time.monotonic() + 30
            logged = 0
            while time.monotonic() < deadline:
                logged = self.sql("SELECT count(*) FROM naive_attempt")[0][0]
                if logged >= len(first):
                    break
                time.sleep(0.2)
            return {
                "deliveries": len(bodies),
                "prefork_processes": concurrency,
                "seconds": round(last - t0, 2),
                **speed(len(first), last - t0, latencies),
                "latency_from": "task sent",
                **tally,
                "attempts_logged": logged,
            }
        finally:
            self.processes.stop("naive-worker")

    def wait_naive_ready(self, naive_app: Any, worker: Any) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError("naive worker exited:\n" + self.processes.log("naive-worker"))
            try:
                if naive_app.control.ping(timeout=0.5):
                    return
            except Exception:
                pass
            time.sleep(0.3)
        raise RuntimeError("naive worker not ready after 60 s")

    # -- 2. slow receivers -----------------------------------------------------------------------

    def slow(self) -> dict[str, Any]:
        m = self.sizes.slow
        path = "/slow/slow"
        tenant_id, callback_id, _ = self.tenant("slow", path)
        assert callback_id is not None
        t0, created = self.publish([(tenant_id, callback_id)] * m)
        # Requests one callback may have in flight across the delivery processes.
        threads = self.args.delivery_processes * min(
            self.settings.delivery_concurrency, self.settings.callback_concurrency
        )
        self.receiver.wait_unique(path, m, timeout=60 + m * 0.5 / max(1, threads // 4))
        tally = self.tally(path, set(created))
        first = tally.pop("_first")
        last = max(first.values(), default=t0)
        latencies = [first[w] - created[w] for w in first if w in created]
        return {
            "deliveries": m,
            "receiver_seconds_per_request": 0.5,
            "seconds_until_all_received": round(last - t0, 2),
            "in_flight_for_one_callback": threads,
            # The last request can arrive no sooner than this with every slot busy.
            "ideal_seconds_at_that_concurrency": round(-(-m // threads) * 0.5 - 0.5, 2),
            **speed(len(first), last - t0, latencies),
            **tally,
            **self.attempts_logged(tenant_id, len(first), 30),
        }

    # -- 3. noisy neighbour ----------------------------------------------------------------------

    def noisy(self) -> dict[str, Any]:
        k, h = self.sizes.noisy, self.sizes.hanging
        hang_path, good_path = "/hang/noisy", "/fast/noisy"
        bad_tenant, bad_callback, _ = self.tenant("noisy-bad", hang_path)
        good_tenant, good_callback, _ = self.tenant("noisy-good", good_path)
        assert bad_callback is not None and good_callback is not None
        plan: list[tuple[uuid.UUID, uuid.UUID]] = []
        every = max(1, k // max(1, h))
        for number in range(k):
            if number % every == 0 and sum(1 for t, _ in plan if t == bad_tenant) < h:
                plan.append((bad_tenant, bad_callback))
            plan.append((good_tenant, good_callback))
        t0, published = self.publish(plan)
        timeout = 60 + k / 10 + h * self.settings.total_timeout_seconds / 4
        try:
            self.receiver.wait_unique(good_path, k, timeout=timeout)
            healthy = {
                f"msg_{row[0].hex}"
                for row in self.sql("SELECT id FROM message WHERE tenant_id = :t", t=good_tenant)
            }
            created = {wid: at for wid, at in published.items() if wid in healthy}
            tally = self.tally(good_path, set(created))
            first = tally.pop("_first")
            last = max(first.values(), default=t0)
            latencies = [first[w] - created[w] for w in first if w in created]
            hang = self.receiver.stats(hang_path)
            return {
                "healthy_deliveries": k,
                "hanging_deliveries": h,
                "read_timeout_s": self.settings.read_timeout_seconds,
                "total_timeout_s": self.settings.total_timeout_seconds,
                "healthy_seconds": round(last - t0, 2),
                "healthy_per_second": rate(len(first), last - t0),
                "healthy_p50_ms": ms(percentile(latencies, 0.5)),
                "healthy_p99_ms": ms(percentile(latencies, 0.99)),
                "hanging_requests_seen": hang["count"],
                **tally,
                **self.attempts_logged(good_tenant, len(first), 30),
            }
        finally:
            # Park the neighbour so its retries do not leak into the next scenarios.
            self.sql(
                "UPDATE delivery SET status = 'cancelled', next_attempt_at = NULL"
                " WHERE tenant_id = :t AND status = 'pending'",
                t=bad_tenant,
            )

    # -- 4. ingest -------------------------------------------------------------------------------

    def ingest(self) -> dict[str, Any]:
        r = self.sizes.ingest
        path = "/fast/ingest"
        tenant_id, _callback_id, api_key = self.tenant("ingest", path)
        assert self.stack is not None
        # The API alone first, as the trivial app is measured: the workers are paused (SIGSTOP)
        # so the same two cores are not also running the jobs and their deliveries. Then again
        # with everything running, the whole pipeline's share of the machine.
        with self.paused("jobs", "deliveries"):
            ours = self.hammer(self.stack.base_url + "/v1/jobs", r, api_key)
        busy = self.hammer(self.stack.base_url + "/v1/jobs", r, api_key)
        # Every job runs and its job.succeeded event must arrive, like any other delivery.
        accepted = ours["accepted"] + busy["accepted"]
        self.receiver.wait_unique(path, accepted, timeout=60 + 2 * r / 10)
        created = self.created_at(tenant_id)
        tally = self.tally(path, set(created))
        tally.pop("_first")
        events = {"accepted": accepted, "jobs_with_event": len(created), **tally}
        if len(created) != accepted:
            self.problems.append(f"ingest: {accepted} accepted, {len(created)} events")

        port = free_port()
        trivial = self.processes.start(
            "trivial-web",
            [
                str(BIN / "gunicorn"),
                "--config",
                "python:config.gunicorn",
                "bench.trivial_app:create_app()",
            ],
            {
                "BOOMERANG_WEB_PORT": str(port),
                "BOOMERANG_WEB_WORKERS": self.stack.env.get("BOOMERANG_WEB_WORKERS", "2"),
                "BOOMERANG_WEB_THREADS": self.stack.env.get("BOOMERANG_WEB_THREADS", "4"),
            },
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", 30, trivial)
            reference = self.hammer(f"http://127.0.0.1:{port}/v1/jobs", r, api_key)
        finally:
            self.processes.stop("trivial-web")
        ours["x_trivial"] = (
            round(ours["per_second"] / reference["per_second"], 3) if reference["per_second"] else 0
        )
        busy["x_trivial"] = (
            round(busy["per_second"] / reference["per_second"], 3) if reference["per_second"] else 0
        )
        return {
            "boomerang": ours,
            "boomerang_with_workers": busy,
            "trivial_flask": reference,
            "events": events,
        }

    @contextlib.contextmanager
    def paused(self, *names: str) -> Iterator[None]:
        """SIGSTOP the named stack processes and all their children; SIGCONT on the way out."""
        assert self.stack is not None
        procs = []
        for name in names:
            parent = psutil.Process(self.stack.processes[name].pid)
            procs += [parent, *parent.children(recursive=True)]
        for proc in procs:
            proc.suspend()
        try:
            yield
        finally:
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.resume()

    def hammer(self, url: str, count: int, api_key: str) -> dict[str, Any]:
        concurrency = self.args.ingest_concurrency
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        remaining = list(range(count))

        async def go() -> float:
            connector = aiohttp.TCPConnector(limit=concurrency)
            timeout = aiohttp.ClientTimeout(total=30)
            headers = {"Authorization": f"Bearer {api_key}"}
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, headers=headers
            ) as client:

                async def worker() -> None:
                    while remaining:
                        number = remaining.pop()
                        sent = time.perf_counter()
                        try:
                            async with client.post(
                                url, json={"type": "echo", "input": {"n": number}}
                            ) as response:
                                await response.read()
                                status = response.status
                        except (aiohttp.ClientError, TimeoutError):
                            status = 0
                        latencies.append(time.perf_counter() - sent)
                        statuses[status] = statuses.get(status, 0) + 1

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return time.perf_counter() - started

        elapsed = asyncio.run(go())
        accepted = statuses.get(202, 0)
        return {
            "requests": count,
            "concurrency": concurrency,
            "accepted": accepted,
            "errors": count - accepted,
            "seconds": round(elapsed, 2),
            **speed(accepted, elapsed, latencies),
        }

    # -- 5. backlog ------------------------------------------------------------------------------

    def backlog(self) -> dict[str, Any]:
        from app.services.attempts import claim_deliveries, has_due_deliveries

        b = self.sizes.backlog
        path = "/fast/backlog"
        tenant_id, callback_id, _ = self.tenant("backlog", path)
        assert self.stack is not None
        worker = psutil.Process(self.stack.processes["deliveries"].pid)
        rss_before = rss(worker)
        body = json.dumps({"type": "job.succeeded", "timestamp": utcnow().isoformat(), "data": {}})
        inserted = time.monotonic()
        # One failed attempt each, a retry due in an hour: what a receiver outage leaves behind.
        for start in range(0, b, 20_000):
            self.sql(
                """
                WITH m AS (
                    INSERT INTO message (id, tenant_id, event_type, body, created_at)
                    SELECT gen_random_uuid(), :t, 'job.succeeded', :body, now()
                    FROM generate_series(1, :n) RETURNING id
                ), d AS (
                    INSERT INTO delivery (id, tenant_id, message_id, callback_id, url, status,
                        attempt_count, next_attempt_at, last_attempt_at, created_at)
                    SELECT gen_random_uuid(), :t, m.id, :c, :url, 'pending', 1,
                        now() + interval '1 hour' + random() * interval '1 hour', now(), now()
                    FROM m RETURNING id
                )
                INSERT INTO delivery_attempt (id, delivery_id, attempted_at, request_headers,
                    response_status, response_body_truncated, duration_ms, succeeded, error)
                SELECT gen_random_uuid(), d.id, now(), '{}'::jsonb, 503, false, 12, false,
                    'receiver answered 503'
                FROM d
                """,
                t=tenant_id,
                c=callback_id,
                url=self.receiver.url(path),
                body=body,
                n=min(20_000, b - start),
            )
        insert_seconds = time.monotonic() - inserted
        self.sql("ANALYZE delivery")
        # Let beat sweep a few times over the backlog before looking at memory and Redis.
        time.sleep(3 * self.settings.sweep_interval_seconds + 1)
        rss_after = rss(worker)
        broker = redis.Redis.from_url(self.redis_server.url)
        queued = broker.llen("deliveries")

        due = min(self.sizes.due_batch, b)
        make_due = text(
            "UPDATE delivery SET next_attempt_at = now() - interval '1 second'"
            " WHERE id IN (SELECT id FROM delivery WHERE tenant_id = :t LIMIT :n) RETURNING id"
        )

        def timed(step: Callable[[Any], Any], with_due: bool) -> tuple[float, Any]:
            # Rolled back, and with the due rows made due only inside this transaction, so no
            # real drain can take them first; afterwards they are made due for the stack.
            with self.session_factory() as session:
                if with_due:
                    session.execute(make_due, {"t": tenant_id, "n": due})
                started = time.perf_counter()
                result = step(session)
                elapsed = time.perf_counter() - started
                session.rollback()
                return elapsed, result

        def sweep(session: Any) -> bool:
            return has_due_deliveries(session, utcnow())

        def claim(session: Any) -> int:
            batch = self.settings.delivery_batch_size
            return len(claim_deliveries(session, utcnow(), self.settings, limit=batch))

        idle = [timed(sweep, False)[0] for _ in range(5)]
        idle_claim = [timed(claim, False)[0] for _ in range(5)]
        due_sweep = [timed(sweep, True)[0] for _ in range(5)]
        claims = [timed(claim, True) for _ in range(5)]
        due_ids = self.sql(make_due.text, t=tenant_id, n=due)
        # Now leave them to the beat sweep, which wakes a drain.
        expected = {
            f"msg_{row[0].hex}"
            for row in self.sql(
                "SELECT message_id FROM delivery WHERE id = ANY(:ids)", ids=[r[0] for r in due_ids]
            )
        }
        self.receiver.wait_unique(path, len(expected), timeout=60 + due / 20)
        tally = self.tally(path, expected)
        tally.pop("_first")
        queued_after = broker.llen("deliveries")
        broker.close()
        return {
            "backlog": b,
            "insert_seconds": round(insert_seconds, 1),
            "delivery_worker_rss_mb_before": round(rss_before / 2**20, 1),
            "delivery_worker_rss_mb_after": round(rss_after / 2**20, 1),
            "redis_deliveries_llen": queued,
            "sweep_nothing_due_ms": ms(statistics.median(idle)),
            "claim_nothing_due_ms": ms(statistics.median(idle_claim)),
            "made_due": due,
            "sweep_due_ms": ms(statistics.median(due_sweep)),
            "claim_due_batch": claims[0][1],
            "claim_due_ms": ms(statistics.median(seconds for seconds, _ in claims)),
            "redis_deliveries_llen_after_due": queued_after,
            **{f"due_{key}": value for key, value in tally.items()},
        }


def rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []

    def row(scenario: str, what: str, value: Any) -> None:
        lines.append(f"{scenario:<12} {what:<34} {value}")

    row("scenario", "figure", "value")
    lines.append("-" * 72)
    for scenario, figures in results.items():
        for what, value in flatten(figures):
            row(scenario, what, value)
    return "\n".join(lines)


def flatten(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in figures.items():
        if isinstance(value, dict):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every scenario scaled down")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="repeatable")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--database", default="boomerang_bench")
    parser.add_argument(
        "--delivery-concurrency",
        type=int,
        help="BOOMERANG_DELIVERY_CONCURRENCY (default: the setting's default)",
    )
    parser.add_argument("--delivery-processes", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=2, help="BOOMERANG_WEB_WORKERS")
    parser.add_argument("--web-threads", type=int, default=4, help="BOOMERANG_WEB_THREADS")
    parser.add_argument("--naive-concurrency", type=int, default=8)
    parser.add_argument("--raw-concurrency", type=int, default=32)
    parser.add_argument("--ingest-concurrency", type=int, default=32)
    for name in Sizes.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, dest=f"size_{name}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = Sizes(**SMOKE.__dict__) if args.smoke else Sizes()
    for name in Sizes.__dataclass_fields__:
        value = getattr(args, f"size_{name}")
        if value is not None:
            setattr(sizes, name, value)

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    log_dir = Path(tempfile.mkdtemp(prefix="boomerang-bench-"))
    bench = Bench(args, sizes, log_dir)
    started = time.monotonic()
    try:
        bench.start()
        for name in args.only or SCENARIOS:
            bench.run(name, getattr(bench, name))
    except KeyboardInterrupt:
        print("interrupted; stopping every process", file=sys.stderr)
        bench.stop()
        return 130
    finally:
        bench.stop()
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "smoke": args.smoke,
        "sizes": sizes.__dict__,
        "total_seconds": round(time.monotonic() - started, 1),
        "logs": str(log_dir),
        "problems": bench.problems,
        "scenarios": bench.results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(
        f"{report['date']}  nproc={report['machine']['nproc']}  "
        f"memory={report['machine']['memory_gb']} GB  sizes={sizes.__dict__}"
    )
    print(table(bench.results))
    print(f"\nJSON: {args.json}   logs: {log_dir}   total {report['total_seconds']} s")
    if bench.problems:
        print("PROBLEMS:\n  " + "\n  ".join(bench.problems), file=sys.stderr)
        return 1
    return 0
