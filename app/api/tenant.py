"""/v1/tenant: the tenant's own settings (the origins its redirect links may go to)."""

from __future__ import annotations

from flask.views import MethodView

from app.api import API_PREFIX, Blueprint
from app.schemas import TenantSchema, TenantUpdateSchema
from app.services import tenant_settings as service
from app.web import current_tenant, db, require_tenant, settings

blp = Blueprint(
    "tenant",
    __name__,
    url_prefix=f"{API_PREFIX}/tenant",
    description="Your tenant's own settings.",
)
blp.before_request(require_tenant)


@blp.route("")
class TenantSettings(MethodView):
    @blp.response(200, TenantSchema)
    def get(self):
        """Your tenant: its name and settings."""
        return current_tenant()

    @blp.arguments(TenantUpdateSchema)
    @blp.response(200, TenantSchema)
    def patch(self, body):
        """Change your settings: ``redirect_origins`` replaces the list of origins your jobs'
        ``redirect_url`` may point at."""
        tenant = service.update_tenant_settings(db(), current_tenant(), body, settings())
        db().commit()
        return tenant
