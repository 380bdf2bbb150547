"""OpenTelemetry tracing: one trace from a job's submission through its run to every delivery
attempt, and a W3C ``traceparent`` on each callback so that its receiver can join the trace.

Work crosses processes through Postgres, not through broker messages: a message only wakes a
drain, which then takes whatever is due, so a wake's headers cannot say which request a job came
from. The context travels with the rows instead: a job keeps the context of the request that
submitted it (``job.traceparent``), an event the context it was raised in
(``message.traceparent``), and a job's run and each attempt start their spans with the stored
one as parent. Celery's own spans (a drain, a sweep) start traces of their own, linked to
whoever sent the wake.

Off unless ``BOOMERANG_TRACING`` is on, and off again with ``OTEL_SDK_DISABLED=true``; where the
spans go, the service name and the sampler are the standard ``OTEL_*`` variables' to say. While
off, OpenTelemetry is not even imported, every helper returns at its first line, and a NULL is
stored where a context would be.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.settings import Settings, SettingsError

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# Unless OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise.
SERVICE_NAME = "boomerang"
EXPORTERS = ("otlp", "console", "none")
# Probes and scrapes come every few seconds; each would be a trace of its own, telling nothing.
UNTRACED_URLS = "/healthz$,/readyz$,/metrics$"
# What carries a trace to a receiver: ours on every attempt while tracing is on.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


@dataclass(frozen=True)
class _Tracing:
    provider: TracerProvider
    tracer: Tracer
    w3c: TraceContextTextMapPropagator


_on: _Tracing | None = None
_OFF: AbstractContextManager[None] = contextlib.nullcontext()


def configure(settings: Settings) -> bool:
    """Trace this process if ``BOOMERANG_TRACING`` is on, sending spans where the ``OTEL_*``
    variables say; once per process (a web worker, a pool process). Whether it traces."""
    if _on is not None:
        return True
    names = exporter_names(settings, os.environ)
    if names is None:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = _exporters(names)
    # The sampler is OTEL_TRACES_SAMPLER's (parent-based, always on, by default).
    provider = TracerProvider(resource=_resource())
    for exporter in exporters:
        # Spans leave in batches from a thread of their own (OTEL_BSP_*): no request and no
        # attempt ever waits on the collector.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # so other libraries' spans go the same way
    use_provider(provider)
    return True


def use_provider(provider: TracerProvider | None) -> None:
    """Trace through ``provider`` from now on; None stops tracing. Tests bring their own."""
    global _on
    if provider is None:
        _on = None
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _on = _Tracing(provider, provider.get_tracer("boomerang"), TraceContextTextMapPropagator())


def enabled() -> bool:
    """Whether this process traces."""
    return _on is not None


def flush() -> None:
    """Send the spans still waiting in this process (before it exits)."""
    if _on is not None:
        _on.provider.force_flush()


def exporter_names(settings: Settings, environ: Mapping[str, str]) -> set[str] | None:
    """Where spans are to go (``otlp``, ``console``), or None when tracing is off. Raises
    SettingsError on what this process could not send, so a worker fails at boot rather than in
    each pool process it forks."""
    if not settings.tracing or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    raw = environ.get("OTEL_TRACES_EXPORTER", "otlp")
    names = {name.strip().lower() for name in raw.split(",") if name.strip()}
    if not names <= set(EXPORTERS):
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER={raw!r} is invalid: expected {', '.join(EXPORTERS)}"
        )
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if "otlp" in names and protocol != "http/protobuf":
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is invalid: Boomerang exports OTLP over "
            "http/protobuf (a collector takes it on port 4318)"
        )
    return names - {"none"}


def _exporters(names: set[str]) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Endpoint, headers, timeout and compression: the OTEL_EXPORTER_OTLP_* variables.
        exporters.append(OTLPSpanExporter())
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(ConsoleSpanExporter())
    return exporters


def _resource() -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME as NAME
    from opentelemetry.sdk.resources import Resource

    # Made in the process that sends (after any fork), so the pid is the one that did the work.
    resource = Resource.create({"process.pid": os.getpid()})
    if str(resource.attributes.get(NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({NAME: SERVICE_NAME}))
    return resource


def instrument_flask(app: Flask) -> None:
    """A span for each request the app answers, probes and scrapes aside."""
    if _on is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    chosen = {"OTEL_PYTHON_FLASK_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"} & set(os.environ)
    FlaskInstrumentor.instrument_app(
        app,
        tracer_provider=_on.provider,
        excluded_urls=None if chosen else UNTRACED_URLS,
        enable_commenter=False,
    )


def instrument_celery() -> None:
    """A span for each task a worker process runs and each task it sends."""
    if _on is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    # Linked, not parented: a drain woken by one sender runs everyone's work, and must not
    # become part of the trace of whichever request or drain happened to wake it.
    CeleryInstrumentor().instrument(tracer_provider=_on.provider, use_span_links=True)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span now current, to store with work another process takes up
    later; None when tracing is off or nothing here is traced."""
    if _on is None:
        return None
    carrier: dict[str, str] = {}
    _on.w3c.inject(carrier)
    return carrier.get("traceparent")


def start_span(
    name: str,
    *,
    parent: str | None,
    kind: str,
    attributes: Mapping[str, Any],
    link_current: bool = False,
) -> Span | None:
    """A span of ``kind`` (``consumer``, ``client``...), not made current, child of the stored
    ``parent`` (a trace of its own without one); None when tracing is off. ``link_current``
    links it to the span now current: the drain that took the work up."""
    if _on is None:
        return None
    from opentelemetry import trace

    links = None
    if link_current:
        here = trace.get_current_span().get_span_context()
        links = [trace.Link(here)] if here.is_valid else None
    return _on.tracer.start_span(
        name,
        context=_context_of(parent),
        kind=trace.SpanKind[kind.upper()],
        attributes=attributes,
        links=links,
    )


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: str | None,
    kind: str,
    attributes: Mapping[str, Any],
    link_current: bool = False,
) -> Iterator[Span | None]:
    """``start_span``, made current for the block and ended after it (an exception marks it
    failed); None when tracing is off."""
    started = start_span(
        name, parent=parent, kind=kind, attributes=attributes, link_current=link_current
    )
    if started is None:
        yield None
        return
    from opentelemetry import trace

    with trace.use_span(started, end_on_exit=True):
        yield started


def within(parent: Span | str | None) -> AbstractContextManager[object]:
    """Make ``parent`` (a span, ended or not, or a stored ``traceparent``) current for the
    block, so that what the block stores joins its trace."""
    if _on is None or parent is None:
        return _OFF
    if isinstance(parent, str):
        return _attached(_context_of(parent))
    from opentelemetry import trace
    from opentelemetry.context import Context

    return _attached(trace.set_span_in_context(parent, Context()))


@contextlib.contextmanager
def _attached(context: Context) -> Iterator[None]:
    from opentelemetry import context as contexts

    token = contexts.attach(context)
    try:
        yield
    finally:
        contexts.detach(token)


def _context_of(traceparent: str | None) -> Context:
    from opentelemetry.context import Context

    # Never the current context: the drain a job or an attempt runs in is not its cause.
    if not traceparent or _on is None:
        return Context()
    return _on.w3c.extract({"traceparent": traceparent}, context=Context())


def put_in_headers(span: Span, headers: dict[str, str]) -> None:
    """Put the span's ``traceparent`` (and ``tracestate``) in outbound headers, replacing any
    that a callback's own headers named (set before these were refused at registration)."""
    if _on is None:
        return
    from opentelemetry import trace
    from opentelemetry.context import Context

    for name in [name for name in headers if name.lower() in TRACE_HEADERS]:
        del headers[name]
    _on.w3c.inject(headers, context=trace.set_span_in_context(span, Context()))


def failed(span: Span, error_type: str | None) -> None:
    """Mark the span's work failed; ``error_type`` says how, in a word (``error.type``)."""
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR))
    if error_type:
        span.set_attribute("error.type", error_type)
