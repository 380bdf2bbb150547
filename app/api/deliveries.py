"""Deliveries and their attempts: the response log."""

from __future__ import annotations

import uuid
from typing import Any

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.events import webhook_id
from app.schemas import (
    DeliveryListSchema,
    DeliveryPageSchema,
    DeliveryReplayRequestSchema,
    DeliveryReplaySchema,
    DeliverySchema,
    DeliverySearchQuerySchema,
    ErrorSchema,
)
from app.services import deliveries as service
from app.services import replays
from app.services.jobs import get_job
from app.services.replays import ReplayRequest
from app.web import current_tenant, db, require_tenant, settings
from app.web.idempotency import idempotency_key

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
        service.search_of(query),
        limit=query["limit"],
        cursor=query.get("cursor"),
    )
    return {"data": page, "next_cursor": next_cursor}


@blp.route("/deliveries/replay", methods=["POST"])
@blp.arguments(DeliveryReplayRequestSchema)
@blp.response(202, DeliveryReplaySchema)
@blp.alt_response(
    200,
    schema=DeliveryReplaySchema,
    description="A dry run's count, or a repeat of an earlier request with the same "
    "Idempotency-Key.",
)
@blp.alt_response(
    409,
    schema=ErrorSchema,
    description="The Idempotency-Key was used before with a different body.",
)
def replay_deliveries(body: dict[str, Any]):
    """Send again every finished (succeeded or failed) delivery the filter matches, each with
    its own ``webhook-id``, in batches in the background; ``Location`` shows the progress. With
    ``dry_run`` only count them. Cancelled deliveries and those to deleted callbacks are never
    sent again. ``POST /v1/callbacks/{id}/recover`` is the one-callback shortcut."""
    request = replays.request_replay(
        db(),
        current_tenant(),
        service.search_of(body),
        utcnow(),
        settings(),
        dry_run=body["dry_run"],
        idempotency_key=idempotency_key(),
    )
    db().commit()
    if request.replay is None:
        return _dry_run(request), 200
    location = {"Location": f"{API_PREFIX}/deliveries/replays/{request.replay.id}"}
    return _replay_answer(request.replay), 202 if request.created else 200, location


@blp.route("/deliveries/replays/<uuid:replay_id>")
@blp.response(200, DeliveryReplaySchema)
@blp.alt_response(404, schema=ErrorSchema, description="You have no replay with this id.")
def get_replay(replay_id: uuid.UUID):
    """A bulk replay's progress."""
    return _replay_answer(replays.get_replay(db(), current_tenant(), replay_id))


def _replay_answer(replay: Any) -> dict[str, Any]:
    return {
        "id": replay.id,
        "status": replay.status,
        "dry_run": False,
        "matched": replay.matched,
        "replayed": replay.replayed,
        "filter": _filter_of(replay.search),
        "created_at": replay.created_at,
        "finished_at": replay.finished_at,
    }


def _dry_run(request: ReplayRequest) -> dict[str, Any]:
    return {"id": None, "status": "dry_run", "dry_run": True, "matched": request.matched}


def _filter_of(stored: dict[str, Any]) -> dict[str, Any]:
    # As the API names them: a webhook-id, not the message id it stands for.
    shown = dict(stored)
    message_id = shown.pop("message_id", None)
    if message_id is not None:
        shown["webhook_id"] = webhook_id(uuid.UUID(message_id))
    return shown


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
