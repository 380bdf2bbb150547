"""/v1/callbacks: register the URLs that hear about jobs."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.schemas import (
    CallbackCreateSchema,
    CallbackListSchema,
    CallbackRecoveredSchema,
    CallbackRecoverQuerySchema,
    CallbackSchema,
    CallbackSecretSchema,
    CallbackUpdateSchema,
    CallbackWithSecretSchema,
    DeliverySchema,
    ErrorSchema,
)
from app.services import callbacks as service
from app.web import current_tenant, db, require_tenant, settings

blp = Blueprint(
    "callbacks",
    __name__,
    url_prefix=f"{API_PREFIX}/callbacks",
    description="Callback URLs registered once per tenant.",
)
blp.before_request(require_tenant)

NO_SUCH_CALLBACK = "You have no callback with this id."


@blp.route("")
class Callbacks(MethodView):
    @blp.arguments(CallbackCreateSchema)
    @blp.response(201, CallbackWithSecretSchema)
    def post(self, body):
        """Register a callback URL; the answer shows its signing secret this once."""
        callback = service.create_callback(db(), current_tenant(), body, settings())
        db().commit()
        return callback

    @blp.response(200, CallbackListSchema)
    def get(self):
        """List your callbacks (without secrets)."""
        return {"data": service.list_callbacks(db(), current_tenant())}


@blp.route("/<uuid:callback_id>")
class CallbackById(MethodView):
    @blp.response(200, CallbackSchema)
    @blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_CALLBACK)
    def get(self, callback_id: uuid.UUID):
        """One callback."""
        return service.get_callback(db(), current_tenant(), callback_id)

    @blp.arguments(CallbackUpdateSchema(partial=True))
    @blp.response(200, CallbackSchema)
    @blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_CALLBACK)
    def patch(self, body, callback_id: uuid.UUID):
        """Change a callback's URL, event types, body format, headers or any other field."""
        callback = service.update_callback(db(), current_tenant(), callback_id, body, settings())
        db().commit()
        return callback

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_CALLBACK)
    def delete(self, callback_id: uuid.UUID):
        """Delete a callback; deliveries still waiting for it are cancelled, the log is kept."""
        service.delete_callback(db(), current_tenant(), callback_id)
        db().commit()


@blp.route("/<uuid:callback_id>/rotate-secret", methods=["POST"])
@blp.response(200, CallbackWithSecretSchema)
@blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_CALLBACK)
def rotate_secret(callback_id: uuid.UUID):
    """Issue a new secret; the old one keeps signing beside it for the grace period."""
    callback = service.rotate_secret(db(), current_tenant(), callback_id, utcnow(), settings())
    db().commit()
    return callback


@blp.route("/<uuid:callback_id>/secret")
@blp.response(200, CallbackSecretSchema)
def show_secret(callback_id: uuid.UUID):
    """The callback's signing secret, with the previous one while a rotation's grace runs."""
    callback = service.get_callback(db(), current_tenant(), callback_id)
    shown: dict[str, object] = {"secret": callback.secret}
    if len(service.signing_secrets(callback, utcnow())) > 1:
        shown["previous_secret"] = callback.previous_secret
        shown["previous_secret_expires_at"] = callback.previous_secret_expires_at
    # A secret must not linger in a browser's or a proxy's cache.
    return shown, {"Cache-Control": "no-store"}


@blp.route("/<uuid:callback_id>/test", methods=["POST"])
@blp.response(202, DeliverySchema)
@blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_CALLBACK)
def send_test(callback_id: uuid.UUID):
    """Send a ``callback.test`` event to this callback now."""
    delivery = service.send_test_event(db(), current_tenant(), callback_id, utcnow())
    db().commit()
    return delivery


@blp.route("/<uuid:callback_id>/enable", methods=["POST"])
@blp.response(200, CallbackSchema)
@blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_CALLBACK)
def enable(callback_id: uuid.UUID):
    """Re-enable a callback that was disabled (by you, by a 410, or after failing for days)."""
    callback = service.enable_callback(db(), current_tenant(), callback_id)
    db().commit()
    return callback


@blp.route("/<uuid:callback_id>/recover", methods=["POST"])
@blp.arguments(CallbackRecoverQuerySchema, location="query")
@blp.response(202, CallbackRecoveredSchema)
@blp.alt_response(404, schema=ErrorSchema, description=NO_SUCH_CALLBACK)
def recover(query, callback_id: uuid.UUID):
    """Send again every failed delivery to this callback since ``?since=`` (after an outage)."""
    count = service.recover_callback(
        db(), current_tenant(), callback_id, query["since"], utcnow(), settings()
    )
    db().commit()
    return {"recovered": count}
