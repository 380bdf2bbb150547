"""/metrics: Prometheus metrics for the processes on this machine, and the backlog in Postgres.

A plain Flask blueprint rather than an API resource: it is for Prometheus, not for tenants, so it
stays out of the OpenAPI document and away from API keys. It has a token of its own
(``BOOMERANG_METRICS_TOKEN``); no label carries a tenant id, URL or payload.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Blueprint, Response, request
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.clock import utcnow
from app.metrics import process_metrics, render, token_accepted
from app.services.backlog import Backlog, read_backlog
from app.web import Unauthorized, db, settings

log = logging.getLogger(__name__)

blp = Blueprint("metrics", __name__)

# A scrape must come back well inside Prometheus' default 10 s timeout, even with a huge backlog.
BACKLOG_QUERY_TIMEOUT_MS = 2000


class BacklogCollector:
    """Gauges read from Postgres at scrape time; they describe the whole service, not this
    process, so every web process reports the same values."""

    def __init__(self, backlog: Backlog) -> None:
        self.backlog = backlog

    def collect(self) -> Iterator[Metric]:
        backlog = self.backlog
        yield GaugeMetricFamily(
            "boomerang_deliveries_due",
            "Pending deliveries due now that no worker holds yet.",
            value=backlog.due,
        )
        yield GaugeMetricFamily(
            "boomerang_deliveries_leased",
            "Pending deliveries a worker holds right now (attempts in flight).",
            value=backlog.leased,
        )
        yield GaugeMetricFamily(
            "boomerang_deliveries_waiting",
            "Pending deliveries scheduled for later (retries waiting out their delay).",
            value=backlog.waiting,
        )
        yield GaugeMetricFamily(
            "boomerang_deliveries_due_oldest_seconds",
            "How long the longest-due pending delivery has been due; 0 when none is.",
            value=backlog.oldest_due_seconds,
        )
        yield GaugeMetricFamily(
            "boomerang_failing_callbacks",
            "Enabled callbacks whose latest attempts failed with no success since.",
            value=backlog.failing_callbacks,
        )
        yield GaugeMetricFamily(
            "boomerang_disabled_callbacks",
            "Callbacks that are disabled now, by the service or by their tenant.",
            value=backlog.disabled_callbacks,
        )


def _backlog() -> BacklogCollector | None:
    session = db()
    try:
        session.execute(text(f"SET LOCAL statement_timeout = {BACKLOG_QUERY_TIMEOUT_MS}"))
        return BacklogCollector(read_backlog(session, utcnow()))
    except DBAPIError:
        # The process counts are still worth answering with; the gauges are left out, which an
        # `absent()` alert notices.
        log.warning("metrics: could not read the backlog from Postgres", exc_info=True)
        session.rollback()
        return None


@blp.get("/metrics")
def metrics() -> Response:
    """The Prometheus exposition."""
    if not token_accepted(settings().metrics_token, request.headers.get("Authorization")):
        raise Unauthorized("Send the metrics token as 'Authorization: Bearer <token>'.")
    collectors = [process_metrics()]
    backlog = _backlog()
    if backlog is not None:
        collectors.append(backlog)
    body, content_type = render(collectors, request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
