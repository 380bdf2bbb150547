"""``boomerang metrics``: a tiny HTTP server for a machine that runs workers but no web process.

It answers what every Boomerang process on the machine counted in ``BOOMERANG_METRICS_DIR``, so
Prometheus can scrape each machine of a worker fleet.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import make_wsgi_app

from app.errors import error_body
from app.metrics import token_accepted
from app.metrics.files import MachineCollector, prepare_metrics_dir

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass  # one line per scrape would drown the worker's own logs


def _error(start_response: StartResponse, code: int, message: str, **headers: str) -> list[bytes]:
    body = json.dumps(error_body(code, message)).encode()
    status = f"{code} {error_body(code)['status']}"
    start_response(status, [("Content-Type", "application/json"), *headers.items()])
    return [body]


def metrics_app(path: str | os.PathLike[str], token: str) -> Wsgi:
    """A WSGI app answering ``GET /metrics`` with the counts kept in ``path``."""
    registry = CollectorRegistry()
    registry.register(MachineCollector(path))  # reads the files anew on every scrape
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _error(start_response, 404, "Metrics are at /metrics.")
        if not token_accepted(token, environ.get("HTTP_AUTHORIZATION")):
            return _error(
                start_response,
                401,
                "Send the metrics token as 'Authorization: Bearer <token>'.",
                **{"WWW-Authenticate": 'Bearer realm="boomerang-metrics"'},
            )
        return exposition(environ, start_response)

    return app


def serve_metrics(path: str | os.PathLike[str], address: str, port: int, token: str) -> None:
    """Serve ``metrics_app`` until interrupted."""
    directory = prepare_metrics_dir(path)
    server_class = _Server6 if ":" in address else _Server
    with make_server(
        address,
        port,
        metrics_app(directory, token),
        server_class=server_class,
        handler_class=_QuietHandler,
    ) as server:
        server.serve_forever()
