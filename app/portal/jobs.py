"""Jobs: a page of them with a status filter, and one job with its deliveries."""

from __future__ import annotations

import uuid
from typing import Any

from flask import render_template, request
from marshmallow import ValidationError

from app.errors import ApiError
from app.models import DeliveryStatus, JobStatus
from app.portal.auth import current_tenant
from app.portal.blueprint import bp
from app.portal.forms import field_errors
from app.schemas import JobListQuerySchema
from app.services import deliveries as deliveries_service
from app.services import jobs as service
from app.web import db

PAGE_SIZE = 25
# While a job runs or its deliveries are on their way, its page reloads itself this often.
REFRESH_SECONDS = 2


@bp.route("/jobs")
def jobs() -> Any:
    """Newest first; ``?status=`` filters, ``?cursor=`` pages on (as the API's list)."""
    args = {name: value for name, value in request.args.items() if value}
    try:
        query = JobListQuerySchema().load({**args, "limit": PAGE_SIZE})
    except ValidationError as exc:
        message = "; ".join(f"{k}: {v}" for k, v in field_errors(exc.normalized_messages()).items())
        raise ApiError(f"This list cannot be shown: {message}.") from None
    page, next_cursor = service.list_jobs(
        db(),
        current_tenant(),
        status=query.get("status"),
        job_type=query.get("type"),
        limit=PAGE_SIZE,
        cursor=query.get("cursor"),
    )
    return render_template(
        "portal/jobs.html",
        jobs=page,
        next_cursor=next_cursor,
        status=query.get("status"),
        job_type=query.get("type"),
        paged=bool(query.get("cursor")),
        statuses=[status.value for status in JobStatus],
    )


@bp.route("/jobs/<uuid:job_id>")
def job(job_id: uuid.UUID) -> Any:
    """One job: input, result or error, progress, and every delivery of its events."""
    tenant = current_tenant()
    found = service.get_job(db(), tenant, job_id)
    deliveries = deliveries_service.list_job_deliveries(db(), tenant, job_id)
    settled = found.finished_at is not None and all(
        delivery.status != DeliveryStatus.PENDING for delivery in deliveries
    )
    return render_template(
        "portal/job.html",
        job=found,
        deliveries=deliveries,
        auto_refresh=None if settled else REFRESH_SECONDS,
    )
