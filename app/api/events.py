"""/v1/events: publish your own events (``invoice.paid``) to the callbacks subscribed to them."""

from __future__ import annotations

from flask.views import MethodView

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.schemas import (
    ErrorSchema,
    EventBatchSchema,
    EventPublishSchema,
    PublishedBatchSchema,
    PublishedEventSchema,
)
from app.services import published as service
from app.web import current_tenant, db, require_tenant, settings

# The batch's path is /v1/events:batch, beside /v1/events rather than under it.
blp = Blueprint(
    "events",
    __name__,
    url_prefix=API_PREFIX,
    description="Your own events, signed, retried and logged like job events.",
)
blp.before_request(require_tenant)


@blp.route("/events")
class Events(MethodView):
    @blp.arguments(EventPublishSchema)
    @blp.response(202, PublishedEventSchema)
    @blp.alt_response(
        200,
        schema=PublishedEventSchema,
        description="A repeat of an event id published before, with the same type and data: "
        "the first message, and nothing more is sent.",
    )
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="The event id was published before with a different type, data, channels "
        "or ordering key.",
    )
    def post(self, event):
        """Publish one event. Every enabled callback whose ``event_types`` name its type (or a
        ``prefix.*`` wildcard over it) gets it, signed, through the same retries and log as
        job events."""
        published = service.publish_event(db(), current_tenant(), event, settings(), utcnow())
        db().commit()
        return published, 202 if published.created else 200


@blp.route("/events:batch")
class EventBatch(MethodView):
    @blp.arguments(EventBatchSchema)
    @blp.response(202, PublishedBatchSchema)
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="An event id was published before with a different type, data, channels "
        "or ordering key: none of the batch is stored.",
    )
    def post(self, batch):
        """Publish up to 100 events in one transaction: all are stored, or none. Each answer
        says whether it was new (``created``) or a repeat of an event id seen before."""
        published = service.publish_batch(
            db(), current_tenant(), batch["events"], settings(), utcnow()
        )
        db().commit()
        return {"data": published}
