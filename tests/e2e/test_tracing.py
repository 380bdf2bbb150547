"""Tracing on the real stack: gunicorn and both Celery workers export to a real OTLP collector,
and one trace runs from the API request through the job's run to the receiver."""

from __future__ import annotations

import pytest
import requests

from tests.support.otlp_collector import CollectedSpan, Collector
from tests.support.settings import database_name, worker_number
from tests.support.stack import QUICK_ENV, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def collector():
    with Collector() as collector:
        yield collector


@pytest.fixture(scope="module")
def traced_stack(worker_id, tmp_path_factory, collector):
    """The whole service with tracing on, exporting to ``collector``."""
    env = {
        **QUICK_ENV,
        "BOOMERANG_TRACING": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        # Batches leave every tenth of a second rather than every five.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    database = database_name("tracing", worker_number(worker_id))
    log_dir = tmp_path_factory.mktemp("traced")
    with running_stack(database, log_dir, env, delivery_processes=1) as stack:
        yield stack


def in_trace(spans: list[CollectedSpan], trace_id: str) -> dict[str, CollectedSpan]:
    return {span.name: span for span in spans if span.trace_id == trace_id}


def test_one_trace_runs_from_the_api_through_both_workers_to_the_receiver(
    traced_stack, collector, receiver
):
    account = traced_stack.create_tenant("traced")
    response = requests.post(
        f"{traced_stack.base_url}/v1/jobs?callbackURL={receiver.url('/traced')}",
        json={"type": "echo", "input": {"order": 17}},
        headers={"Authorization": f"Bearer {account['api_key']}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text

    (received,) = receiver.wait_for(1, "/traced")
    _version, trace_id, attempt_id, _flags = received.headers["traceparent"].split("-")
    wanted = {"POST /v1/jobs", "job echo", "POST"}
    spans = collector.wait_for(lambda spans: wanted <= set(in_trace(spans, trace_id)))
    traced = in_trace(spans, trace_id)
    request, run, attempt = traced["POST /v1/jobs"], traced["job echo"], traced["POST"]
    assert (request.kind, run.kind, attempt.kind) == ("server", "consumer", "client")
    assert request.parent_span_id == ""
    assert run.parent_span_id == request.span_id
    assert attempt.parent_span_id == run.span_id
    assert attempt.span_id == attempt_id
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["boomerang.delivery.outcome"] == "succeeded"
    # The gunicorn worker, a jobs pool process and a delivery pool process.
    assert len({span.resource["process.pid"] for span in (request, run, attempt)}) == 3
    assert {span.resource["service.name"] for span in (request, run, attempt)} == {"boomerang"}

    # The Celery drain that ran the job is a trace of its own, which the run links to.
    ((drain_trace, drain_span),) = run.links
    assert drain_trace != trace_id
    collector.wait_for(
        lambda spans: any(
            span.span_id == drain_span and span.name == "run/boomerang.run_jobs" for span in spans
        )
    )


def test_the_stream_process_joins_a_callers_trace_for_a_long_poll_and_an_event_stream(
    traced_stack, collector
):
    account = traced_stack.create_tenant("streamed")
    auth = {"Authorization": f"Bearer {account['api_key']}"}
    job = requests.post(
        f"{traced_stack.base_url}/v1/jobs",
        json={"type": "echo", "input": {}},
        headers=auth,
        timeout=10,
    ).json()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    stream = f"{traced_stack.stream_base_url}/stream/v1/jobs/{job['id']}"

    polled = requests.get(f"{stream}?wait=5", headers={**auth, **caller}, timeout=10)
    events = requests.get(f"{stream}/events", headers={**auth, **caller}, timeout=20)

    assert polled.status_code == 200 and events.status_code == 200
    wanted = {"GET /stream/v1/jobs/{job_id}", "GET /stream/v1/jobs/{job_id}/events"}
    spans = collector.wait_for(lambda spans: wanted <= set(in_trace(spans, trace_id)))
    traced = in_trace(spans, trace_id)
    for name in wanted:
        assert traced[name].kind == "server"
        assert traced[name].parent_span_id == "00f067aa0ba902b7"
        assert traced[name].attributes["http.response.status_code"] == 200
