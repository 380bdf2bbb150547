"""At a glance: each callback's last 24 hours, and jobs and deliveries by status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import render_template

from app.clock import utcnow
from app.portal import charts
from app.portal.auth import current_tenant
from app.portal.blueprint import bp
from app.services import stats
from app.web import db

WINDOW_HOURS = 24


@bp.route("/")
def dashboard() -> Any:
    """The dashboard."""
    tenant, now = current_tenant(), utcnow()
    health = stats.callback_health(db(), tenant, now, hours=WINDOW_HOURS)
    counts = stats.status_counts(db(), tenant, now - timedelta(hours=WINDOW_HOURS))
    return render_template(
        "portal/dashboard.html",
        health=health,
        counts=counts,
        charts=charts,
        window_hours=WINDOW_HOURS,
    )
