"""/v1/keys: the tenant's own API keys, to rotate them without an operator."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.schemas import ApiKeyCreatedSchema, ApiKeyListSchema, KeyCreateSchema
from app.services import tenants as service
from app.web import current_tenant, db, require_tenant

blp = Blueprint(
    "keys",
    __name__,
    url_prefix=f"{API_PREFIX}/keys",
    description="API keys: create a new one, list them, revoke an old one.",
)
blp.before_request(require_tenant)


@blp.route("")
class Keys(MethodView):
    @blp.arguments(KeyCreateSchema)
    @blp.response(201, ApiKeyCreatedSchema)
    def post(self, _body):
        """Create an API key; the answer shows the whole key this once."""
        new = service.issue_api_key(db(), current_tenant())
        db().commit()
        return {
            "id": new.key.id,
            "prefix": new.key.prefix,
            "api_key": new.api_key,
            "created_at": new.key.created_at,
        }

    @blp.response(200, ApiKeyListSchema)
    def get(self):
        """List your API keys, revoked ones included (never their secrets)."""
        return {"data": service.list_api_keys(db(), current_tenant())}


@blp.route("/<uuid:key_id>")
class KeyById(MethodView):
    @blp.response(204)
    def delete(self, key_id: uuid.UUID):
        """Revoke a key: the very next request made with it gets a 401.

        You may revoke the key this request is made with. Your last active key cannot be
        revoked (409), so you can never lock yourself out: create a new key first, then
        revoke the old one.
        """
        service.revoke_api_key(db(), current_tenant(), key_id, utcnow())
        db().commit()
