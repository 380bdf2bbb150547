"""Tracing: one trace from ``POST /v1/jobs`` through the job's run to each delivery attempt,
carried across processes by the rows in Postgres, and the ``traceparent`` a receiver sees.

The web, the job run and the attempt run here in one process, each through the code its own
process runs, against real Postgres and a real receiver; the spans are read from the SDK's
in-memory exporter. ``tests/e2e/test_tracing.py`` runs the same trip on the real processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select

from app import create_app, tracing
from app.models import Delivery, Job, Message
from config.settings import SettingsError
from tests.factories import make_callback, make_delivery, make_job
from tests.job_runs import execute_job
from tests.sending import deliver


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for the test's length."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


@pytest.fixture
def traced_client(spans, settings, db_session):
    """The API built once tracing is on, as a web worker builds it."""
    app = create_app(settings, session_factory=lambda: db_session)
    app.config["TESTING"] = True
    return app.test_client()


def only(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    (found,) = [span for span in spans.get_finished_spans() if span.name == name]
    return found


def traceparent_ids(value: str) -> tuple[int, int]:
    """The trace id and span id a ``traceparent`` header names."""
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16)


def delivery_of(db_session, job_id: uuid.UUID) -> uuid.UUID:
    return db_session.scalar(select(Delivery.id).join(Message).where(Message.job_id == job_id))


def test_one_trace_runs_from_the_job_request_through_its_run_to_the_receiver(
    traced_client, spans, db_session, settings, auth, http, receiver
):
    db_session.commit()
    response = traced_client.post(
        f"/v1/jobs?callbackURL={receiver.url('/traced')}",
        json={"type": "echo", "input": {"order": 17}},
        headers=auth,
    )
    assert response.status_code == 202, response.get_json()
    job_id = uuid.UUID(response.get_json()["id"])
    assert execute_job(db_session, settings, job_id) is True
    assert deliver(db_session, http, settings, delivery_of(db_session, job_id)) is True

    request = only(spans, "POST /v1/jobs")
    run = only(spans, "job echo")
    attempt = only(spans, "POST")
    assert (request.kind, run.kind, attempt.kind) == (
        SpanKind.SERVER,
        SpanKind.CONSUMER,
        SpanKind.CLIENT,
    )
    trace_id = request.context.trace_id
    assert run.context.trace_id == attempt.context.trace_id == trace_id
    assert run.parent is not None and run.parent.span_id == request.context.span_id
    assert attempt.parent is not None and attempt.parent.span_id == run.context.span_id
    assert run.attributes["boomerang.job.id"] == str(job_id)
    assert run.attributes["boomerang.job.outcome"] == "succeeded"
    (received,) = receiver.wait_for(1, "/traced")
    assert traceparent_ids(received.headers["traceparent"]) == (
        trace_id,
        attempt.context.span_id,
    )
    assert attempt.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["server.port"] == receiver.port
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["boomerang.delivery.outcome"] == "succeeded"
    assert attempt.status.status_code is StatusCode.UNSET
    assert attempt.end_time is not None and attempt.start_time is not None
    assert attempt.end_time >= attempt.start_time


def test_a_failed_attempt_span_says_the_status_the_cause_and_that_it_will_be_retried(
    spans, db_session, settings, owner, http, receiver
):
    receiver.answer("/down", 503)
    callback = make_callback(db_session, owner, receiver.url("/down"))
    delivery = make_delivery(db_session, callback)
    db_session.commit()

    assert deliver(db_session, http, settings, delivery.id) is False

    attempt = only(spans, "POST")
    assert attempt.parent is None  # raised outside any trace: the attempt starts its own
    assert attempt.attributes["http.response.status_code"] == 503
    assert attempt.attributes["boomerang.delivery.outcome"] == "retrying"
    assert attempt.attributes["boomerang.callback.id"] == str(callback.id)
    assert attempt.attributes["error.type"] == "5xx"
    assert attempt.status.status_code is StatusCode.ERROR
    (received,) = receiver.received("/down")
    assert traceparent_ids(received.headers["traceparent"])[1] == attempt.context.span_id


def test_a_failed_job_run_is_an_error_span_naming_the_exception_type_not_its_message(
    spans, db_session, settings, owner
):
    job = make_job(db_session, owner, "fail", {"message": "the tenant's own words"})
    db_session.commit()

    assert execute_job(db_session, settings, job.id) is False

    run = only(spans, "job fail")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["boomerang.job.outcome"] == "failed"
    assert run.attributes["error.type"] == "RuntimeError"
    assert "the tenant's own words" not in str(run.attributes)


def test_a_callbacks_own_traceparent_from_before_it_was_refused_gives_way_to_ours(
    spans, db_session, settings, owner, http, receiver
):
    callback = make_callback(
        db_session,
        owner,
        receiver.url("/legacy"),
        headers={"TraceParent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "X-Env": "prod"},
    )
    delivery = make_delivery(db_session, callback)
    db_session.commit()

    assert deliver(db_session, http, settings, delivery.id) is True

    (received,) = receiver.received("/legacy")
    sent = {name.lower(): value for name, value in received.headers.items()}
    attempt = only(spans, "POST")
    assert traceparent_ids(sent["traceparent"]) == (
        attempt.context.trace_id,
        attempt.context.span_id,
    )
    assert sent["x-env"] == "prod"


def test_with_tracing_off_no_context_is_stored_and_no_traceparent_is_sent(
    client, db_session, settings, auth, http, receiver
):
    assert not tracing.enabled()
    response = client.post(
        f"/v1/jobs?callbackURL={receiver.url('/untraced')}",
        json={"type": "echo", "input": {}},
        headers=auth,
    )
    job_id = uuid.UUID(response.get_json()["id"])
    assert execute_job(db_session, settings, job_id) is True
    assert deliver(db_session, http, settings, delivery_of(db_session, job_id)) is True

    assert db_session.get_one(Job, job_id).traceparent is None
    assert db_session.scalar(select(Message.traceparent).where(Message.job_id == job_id)) is None
    (received,) = receiver.received("/untraced")
    assert not {"traceparent", "tracestate"} & {name.lower() for name in received.headers}


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_an_exporter_this_process_cannot_send_to_stops_the_boot_naming_the_variable(
    settings, environ, named
):
    with pytest.raises(SettingsError, match=named):
        tracing.exporter_names(settings.replace(tracing=True), environ)


def test_otel_sdk_disabled_turns_tracing_off_whatever_boomerang_tracing_says(settings):
    traced = settings.replace(tracing=True)
    assert tracing.exporter_names(traced, {}) == {"otlp"}
    assert tracing.exporter_names(traced, {"OTEL_SDK_DISABLED": "true"}) is None
    assert tracing.exporter_names(settings, {"OTEL_TRACES_EXPORTER": "console"}) is None
