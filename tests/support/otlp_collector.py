"""A real OTLP/HTTP trace collector on a loopback port: what a stack's processes export with the
standard OTLP exporter arrives here as it would at an OpenTelemetry Collector, and its spans are
kept for a test to read.

Point a process at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<collector.endpoint>``.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class CollectedSpan:
    """One span as it arrived, ids in hex as a ``traceparent`` writes them."""

    name: str
    kind: str  # "server", "client", "consumer", ...
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a trace's root
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each linked span
    resource: dict[str, Any]  # service.name, process.pid, ...


def _values(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair) for pair in pairs}


def _value(pair: KeyValue) -> Any:
    which = pair.value.WhichOneof("value")
    return getattr(pair.value, which) if which else None


def _collected(span: Span, resource: dict[str, Any]) -> CollectedSpan:
    return CollectedSpan(
        name=span.name,
        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").lower(),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        attributes=_values(span.attributes),
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
        resource=resource,
    )


class Collector:
    """Serves ``POST /v1/traces`` from a thread of its own until ``stop``."""

    def __init__(self) -> None:
        self._spans: list[CollectedSpan] = []
        self._arrived = threading.Condition()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server looks for
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != TRACES_PATH:
                    self.send_error(404)
                    return
                collector._keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: object) -> None:
                pass  # a line per export batch would bury the test's own output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-collector", daemon=True
        )

    @property
    def endpoint(self) -> str:
        """The base URL an OTLP/HTTP exporter is given (it adds ``/v1/traces``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        spans = [
            _collected(span, _values(resource_spans.resource.attributes))
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._arrived:
            self._spans.extend(spans)
            self._arrived.notify_all()

    def spans(self) -> list[CollectedSpan]:
        """Every span so far."""
        with self._arrived:
            return list(self._spans)

    def wait_for(
        self, found: Callable[[list[CollectedSpan]], bool], timeout: float = 20.0
    ) -> list[CollectedSpan]:
        """Block until the spans so far satisfy ``found``; fail the test if they never do."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not found(self._spans):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({span.name for span in self._spans})
                    raise AssertionError(f"the spans never matched; got {names}")
                self._arrived.wait(remaining)
            return list(self._spans)
