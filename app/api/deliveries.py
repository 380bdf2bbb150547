"""Deliveries and their attempts: the response log."""

from __future__ import annotations

import uuid
from typing import Any

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.models import DeliveryStatus
from app.schemas import (
    DeliveryListSchema,
    DeliveryPageSchema,
    DeliverySchema,
    DeliverySearchQuerySchema,
    ErrorSchema,
)
from app.services import deliveries as service
from app.services.jobs import get_job
from app.web import current_tenant, db, require_tenant, settings

blp = Blueprint(
    "deliveries",
    __name__,
    url_prefix=API_PREFIX,
    description="Each callback POST and every attempt's response.",
)
blp.before_request(require_tenant)

NO_SUCH_DELIVERY = "You have no delivery with this id."


@blp.route("/jobs/<uuid:job_id>/deliveries")
@blp.response(200, DeliveryListSchema)
@blp.alt_response(404, schema=ErrorSchema, description="You have no job with this id.")
def list_job_deliveries(job_id: uuid.UUID):
    """Every delivery of the job's events, with attempts."""
    tenant = current_tenant()
    get_job(db(), tenant, job_id)
    return {"data": service.list_job_deliveries(db(), tenant, job_id)}


@blp.route("/deliveries")
@blp.arguments(DeliverySearchQuerySchema, location="query")
@blp.response(200, DeliveryPageSchema)
def search_deliveries(query: dict[str, Any]):
    """Search your whole delivery log, newest first, by any of the filters (each narrows); pass
    ``next_cursor`` back as ``cursor`` for the next page. Attempts are in each delivery's own
    ``GET``."""
    page, next_cursor = service.list_deliveries(
        db(),
        current_tenant(),
        _search(query),
        limit=query["limit"],
        cursor=query.get("cursor"),
    )
    return {"data": page, "next_cursor": next_cursor}


def _search(query: dict[str, Any]) -> service.DeliverySearch:
    webhook = query.get("webhook_id")
    status = query.get("status")
    return service.DeliverySearch(
        callback_id=query.get("callback_id"),
        status=DeliveryStatus(status) if status else None,
        event_type=query.get("event_type"),
        message_id=uuid.UUID(webhook.removeprefix("msg_")) if webhook else None,
        job_id=query.get("job_id"),
        since=query.get("since"),
        until=query.get("until"),
        response=query.get("response"),
    )


@blp.route("/deliveries/<uuid:delivery_id>")
@blp.response(200, DeliverySchema)
@blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_DELIVERY)
def get_delivery(delivery_id: uuid.UUID):
    """One delivery with its attempts."""
    return service.get_delivery(db(), current_tenant(), delivery_id)


@blp.route("/deliveries/<uuid:delivery_id>/retry", methods=["POST"])
@blp.response(202, DeliverySchema)
@blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_DELIVERY)
@blp.alt_response(
    409, schema=ErrorSchema, description="The delivery was cancelled with its callback."
)
def retry_delivery(delivery_id: uuid.UUID):
    """Send this delivery again now."""
    delivery = service.retry_delivery(db(), current_tenant(), delivery_id, utcnow(), settings())
    db().commit()
    return delivery
