"""6. e2e: the user's whole path, API -> job -> signed callback, on ``boomerang up`` as users run
it (web, jobs and delivery workers, beat and Flower), beside the stack a Flask + Celery tutorial
builds (bench/naive/) on the same gunicorn configuration and 8 prefork processes.

For each: a burst driven by wrk for ``e2e_seconds`` (its rate is the ingest rate with the workers
running; jobs/s is from the first request to the last callback received), then a steady run at
half that jobs/s with each job's latency from its request to its callback's arrival.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from app.signing import new_signing_secret
from bench import wrk
from bench.api_client import submit_count, submit_steadily
from bench.figures import ms, percentile, rate
from bench.outbox import make_tenant
from bench.processes import wait_http
from bench.references import naive_worker
from bench.scenarios.ingest import trivial_flask
from bench.stack import Bench
from bench.tally import settled_count, submit_to_arrival, tally
from tests.support import BIN
from tests.support.processes import free_port

PATH = "/fast/e2e"
TUTORIAL_PATH = "/fast/tutorial"
TUTORIAL_WARM_UP = "/fast/tutorial-warm-up"
BODY = '{"type": "echo", "input": {"n": {n}}}'
TUTORIAL_PROCESSES = 8


def run(bench: Bench) -> dict[str, Any]:
    """Both systems through the same measurements, and our figures as ratios of theirs."""
    with boomerang_up(bench) as base_url:
        tenant_id, _, api_key = make_tenant(bench, "e2e", PATH)
        ours = measure(
            bench,
            base_url,
            api_key,
            PATH,
            jobs=lambda: bench.sql("SELECT count(*) FROM job WHERE tenant_id = :t", t=tenant_id)[0][
                0
            ],
            webhook_ids=lambda: {
                str(job_id): f"msg_{message_id.hex}"
                for job_id, message_id in bench.sql(
                    "SELECT job_id, id FROM message WHERE tenant_id = :t", t=tenant_id
                )
            },
        )
    with tutorial_stack(bench) as (base_url, api_key):
        theirs = measure(
            bench,
            base_url,
            api_key,
            TUTORIAL_PATH,
            jobs=lambda: bench.sql("SELECT count(*) FROM naive_job")[0][0],
            webhook_ids=lambda: {
                str(job_id): f"msg_{job_id.hex}"
                for (job_id,) in bench.sql("SELECT id FROM naive_job")
            },
        )
    trivial = trivial_flask(bench, api_key)
    ratios = {
        "jobs_per_second_x_tutorial": _ratio(ours["jobs_per_second"], theirs["jobs_per_second"]),
        "ingest_x_tutorial": _ratio(ours["ingest"]["per_second"], theirs["ingest"]["per_second"]),
        "ingest_x_trivial": _ratio(ours["ingest"]["per_second"], trivial["per_second"]),
    }
    return {"boomerang": ours, "tutorial": theirs, "trivial_flask": trivial, "ratios": ratios}


def measure(
    bench: Bench,
    base_url: str,
    api_key: str,
    path: str,
    *,
    jobs: Callable[[], int],
    webhook_ids: Callable[[], dict[str, str]],
) -> dict[str, Any]:
    """The burst and the steady run against one system."""
    url = base_url + "/v1/jobs"
    t0 = time.time()
    load = wrk.post_json(
        url,
        BODY,
        seconds=bench.sizes.e2e_seconds,
        connections=bench.args.ingest_concurrency,
        api_key=api_key,
    )
    accepted = settled_count(jobs)
    bench.receiver.wait_unique(path, accepted, timeout=60 + accepted / 20)
    burst_ids = set(webhook_ids().values())
    counted = tally(bench, path, burst_ids)
    first = counted.pop("_first")
    last = max(first.values(), default=t0)
    jobs_per_second = rate(len(first), last - t0)

    steady_rate = max(1.0, jobs_per_second / 2)
    submitted = submit_steadily(url, api_key, steady_rate, bench.sizes.steady_seconds)
    bench.receiver.wait_unique(path, len(burst_ids) + len(submitted.sent_at), timeout=60)
    ids = webhook_ids()
    steady_counted, latencies = submit_to_arrival(bench, path, submitted.sent_at, ids)
    return {
        "jobs": accepted,
        "jobs_per_second": jobs_per_second,
        "seconds_to_last_callback": round(last - t0, 2),
        "ingest": load,
        **counted,
        "steady": {
            "target_per_second": round(steady_rate, 1),
            "jobs": len(submitted.sent_at),
            "submit_to_receipt_p50_ms": ms(percentile(latencies, 0.5)),
            "submit_to_receipt_p99_ms": ms(percentile(latencies, 0.99)),
            "request_p50_ms": ms(percentile(submitted.latencies, 0.5)),
            "request_p99_ms": ms(percentile(submitted.latencies, 0.99)),
            "request_errors": submitted.errors,
            "duplicates": steady_counted["duplicates"],
            "lost": steady_counted["lost"],
        },
    }


@contextlib.contextmanager
def boomerang_up(bench: Bench) -> Iterator[str]:
    """``boomerang up`` (the Procfile: web, workers, beat, Flower) in place of the bench's own
    processes, on the same database, Redis and port; the bench's stack again afterwards."""
    stack = bench.stack
    stack.stop()
    env = {
        **stack.env,
        "BOOMERANG_WEB_PORT": str(stack.web_port),
        "BOOMERANG_FLOWER_PORT": str(free_port()),
        "BOOMERANG_FLOWER_BASIC_AUTH": f"bench:{secrets.token_urlsafe(16)}",
        "BOOMERANG_METRICS_DIR": str(stack.log_dir / "up-metrics"),
    }
    process = bench.processes.start("boomerang-up", [str(BIN / "boomerang"), "up"], env)
    try:
        wait_http(stack.base_url + "/readyz", 60, process)
        warm_up(bench, stack.base_url)
        yield stack.base_url
    finally:
        bench.processes.stop("boomerang-up", timeout=30)
        stack.start()


@contextlib.contextmanager
def tutorial_stack(bench: Bench) -> Iterator[tuple[str, str]]:
    """The tutorial's web (same gunicorn configuration and size) and its 8 prefork workers,
    with a tenant, an API key and a callback row; (base URL, API key)."""
    api_key = secrets.token_urlsafe(24)
    tenant_id = uuid.uuid4()
    bench.sql("TRUNCATE naive_job, naive_callback, naive_tenant, naive_attempt")
    bench.sql("INSERT INTO naive_tenant (id, api_key) VALUES (:t, :k)", t=tenant_id, k=api_key)
    bench.sql(
        "INSERT INTO naive_callback (id, tenant_id, url, secret) VALUES (:i, :t, :u, :s)",
        i=uuid.uuid4(),
        t=tenant_id,
        u=bench.receiver.url(TUTORIAL_WARM_UP),
        # A real Standard Webhooks secret: base64, not URL-safe text, which the library's decoder
        # misreads whenever a '-' or '_' is drawn.
        s=new_signing_secret(),
    )
    broker = bench.stack.env["REDIS_URL"].rsplit("/", 1)[0] + "/2"
    env = {
        "NAIVE_BROKER_URL": broker,
        "NAIVE_DATABASE_URL": bench.stack.database_url,
        "BOOMERANG_WEB_PORT": str(port := free_port()),
        "BOOMERANG_WEB_WORKERS": bench.stack.env.get("BOOMERANG_WEB_WORKERS", "2"),
        "BOOMERANG_WEB_THREADS": bench.stack.env.get("BOOMERANG_WEB_THREADS", "4"),
    }
    web = bench.processes.start(
        "tutorial-web",
        [
            str(BIN / "gunicorn"),
            "--config",
            "python:app.web.gunicorn",
            "bench.naive.web:create_app()",
        ],
        env,
    )
    worker = bench.processes.start(
        "tutorial-worker", naive_worker(TUTORIAL_PROCESSES, f"tutorial-{port}"), env
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_http(base_url + "/healthz", 60, web)
        # A first job through the whole path: the workers are consuming when the burst starts.
        first_job_delivered(bench, base_url, api_key, web, worker)
        bench.sql("TRUNCATE naive_job, naive_attempt")
        bench.sql("UPDATE naive_callback SET url = :u", u=bench.receiver.url(TUTORIAL_PATH))
        yield base_url, api_key
    finally:
        bench.processes.stop("tutorial-worker")
        bench.processes.stop("tutorial-web")


def first_job_delivered(bench: Bench, base_url: str, api_key: str, web: Any, worker: Any) -> None:
    """Submit one job to the tutorial stack until it is accepted, and wait for its callback.

    On a loaded machine the first request can fail while gunicorn's workers are still importing;
    the tutorial has no retry of its own, so the warm-up asks again rather than wait for nothing.
    A failure says what the stack wrote, since that is all a CI log keeps of it (a web that
    exited lost its port to another process, which may well have answered the health check)."""
    deadline = time.monotonic() + 90
    accepted = errors = 0
    next_submit = 0.0
    while bench.receiver.stats(TUTORIAL_WARM_UP)["unique"] < 1:
        now = time.monotonic()
        if web.poll() is not None or worker.poll() is not None or now > deadline:
            raise RuntimeError(
                f"the tutorial stack did not deliver its first job (accepted {accepted}, "
                f"refused {errors}, web exit {web.poll()}, worker exit {worker.poll()}):\n"
                + bench.processes.log("tutorial-web")[-1500:]
                + bench.processes.log("tutorial-worker")[-1500:]
            )
        if not accepted and now >= next_submit:
            submitted = submit_count(base_url + "/v1/jobs", api_key, 1, 1)
            accepted, errors = len(submitted.sent_at), errors + submitted.errors
            next_submit = now + 5
        time.sleep(0.2)


def warm_up(bench: Bench, base_url: str) -> None:
    """One job through the whole path, so every process is consuming before the burst."""
    _, _, api_key = make_tenant(bench, f"warm-up-{uuid.uuid4().hex[:8]}", "/fast/warm-up")
    before = bench.receiver.stats("/fast/warm-up")["unique"]
    submit_count(base_url + "/v1/jobs", api_key, 1, 1)
    if not bench.receiver.wait_unique("/fast/warm-up", before + 1, timeout=60):
        raise RuntimeError("boomerang up did not deliver its first job within 60 s")


def _ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3) if theirs else 0.0
