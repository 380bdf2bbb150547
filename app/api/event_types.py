"""/v1/event-types: the catalogue of the event types you publish."""

from __future__ import annotations

from flask.views import MethodView

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.schemas import (
    ErrorSchema,
    EventTypeCreateSchema,
    EventTypeListSchema,
    EventTypeSchema,
    EventTypeUpdateSchema,
)
from app.services import event_types as service
from app.web import current_tenant, db, require_tenant

blp = Blueprint(
    "event-types",
    __name__,
    url_prefix=f"{API_PREFIX}/event-types",
    description="The catalogue of your own event types, each with an optional JSON Schema.",
)
blp.before_request(require_tenant)


@blp.route("")
class EventTypes(MethodView):
    @blp.arguments(EventTypeCreateSchema)
    @blp.response(201, EventTypeSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="The type is in the catalogue.")
    def post(self, body):
        """Add a type to your catalogue; events of it may then be published."""
        event_type = service.create_event_type(db(), current_tenant(), body)
        db().commit()
        return event_type

    @blp.response(200, EventTypeListSchema)
    def get(self):
        """Your whole catalogue, by name, deprecated types included."""
        return {"data": service.list_event_types(db(), current_tenant())}


@blp.route("/<name>")
class EventTypeByName(MethodView):
    @blp.response(200, EventTypeSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such type in your catalogue.")
    def get(self, name: str):
        """One type of your catalogue."""
        return service.get_event_type(db(), current_tenant(), name)

    @blp.arguments(EventTypeUpdateSchema)
    @blp.response(200, EventTypeSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such type in your catalogue.")
    def patch(self, body, name: str):
        """Change a type's description or schema (``null`` removes the schema). Events already
        published are not checked again."""
        event_type = service.update_event_type(db(), current_tenant(), name, body)
        db().commit()
        return event_type


@blp.route("/<name>/deprecate", methods=["POST"])
@blp.response(200, EventTypeSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such type in your catalogue.")
def deprecate(name: str):
    """Mark a type deprecated. Its events are still published and delivered; the catalogue
    shows it deprecated, so publishers and receivers can move off it."""
    event_type = service.deprecate_event_type(db(), current_tenant(), name, utcnow())
    db().commit()
    return event_type
