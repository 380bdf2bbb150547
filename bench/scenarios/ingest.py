"""4. ingest: POST /v1/jobs under concurrent load from wrk, beside a trivial Flask app on the same
gunicorn config; then every accepted job's event must arrive."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psutil

from bench import wrk
from bench.outbox import created_at, make_tenant
from bench.processes import wait_http
from bench.stack import Bench
from bench.tally import settled_count, tally
from tests.support import BIN
from tests.support.processes import free_port

PATH = "/fast/ingest"
BODY = '{"type": "echo", "input": {"n": {n}}}'


def run(bench: Bench) -> dict[str, Any]:
    """Our API's rate with the workers paused and running, the trivial app's, and the events."""
    seconds = bench.sizes.ingest_seconds
    tenant_id, _callback_id, api_key = make_tenant(bench, "ingest", PATH)
    jobs_url = bench.stack.base_url + "/v1/jobs"
    # The API alone first, as the trivial app is measured: the workers are paused (SIGSTOP)
    # so the same two cores are not also running the jobs and their deliveries. Then again
    # with everything running, the whole pipeline's share of the machine.
    with paused(bench, "jobs", "deliveries"):
        ours = hammer(bench, jobs_url, seconds, api_key)
    busy = hammer(bench, jobs_url, seconds, api_key)
    # Every job runs and its job.succeeded event must arrive, like any other delivery.
    accepted = settled_count(
        lambda: bench.sql("SELECT count(*) FROM job WHERE tenant_id = :t", t=tenant_id)[0][0]
    )
    bench.receiver.wait_unique(PATH, accepted, timeout=60 + accepted / 10)
    created = created_at(bench, tenant_id)
    counted = tally(bench, PATH, set(created))
    counted.pop("_first")
    events = {"accepted": accepted, "jobs_with_event": len(created), **counted}
    if len(created) != accepted:
        bench.problems.append(f"ingest: {accepted} accepted, {len(created)} events")

    reference = trivial_flask(bench, api_key)
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


def trivial_flask(bench: Bench, api_key: str) -> dict[str, Any]:
    """The same load on bench/trivial_app.py, served by the same gunicorn config and size."""
    port = free_port()
    trivial = bench.processes.start(
        "trivial-web",
        [
            str(BIN / "gunicorn"),
            "--config",
            "python:app.web.gunicorn",
            "bench.trivial_app:create_app()",
        ],
        {
            "BOOMERANG_WEB_PORT": str(port),
            "BOOMERANG_WEB_WORKERS": bench.stack.env.get("BOOMERANG_WEB_WORKERS", "2"),
            "BOOMERANG_WEB_THREADS": bench.stack.env.get("BOOMERANG_WEB_THREADS", "4"),
        },
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 30, trivial)
        return hammer(
            bench, f"http://127.0.0.1:{port}/v1/jobs", bench.sizes.ingest_seconds, api_key
        )
    finally:
        bench.processes.stop("trivial-web")


@contextlib.contextmanager
def paused(bench: Bench, *names: str) -> Iterator[None]:
    """SIGSTOP the named stack processes and all their children; SIGCONT on the way out."""
    procs = []
    for name in names:
        parent = psutil.Process(bench.stack.processes[name].pid)
        procs += [parent, *parent.children(recursive=True)]
    for proc in procs:
        proc.suspend()
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.resume()


def hammer(bench: Bench, url: str, seconds: int, api_key: str) -> dict[str, Any]:
    """wrk POSTing echo jobs to ``url`` from ``--ingest-concurrency`` connections."""
    return wrk.post_json(
        url, BODY, seconds=seconds, connections=bench.args.ingest_concurrency, api_key=api_key
    )
