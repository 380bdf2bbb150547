"""Settings: the tenant's own settings (its redirect and CORS origins), through the API's schema
and service."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.errors import ApiError
from app.portal.auth import current_tenant
from app.portal.blueprint import bp
from app.portal.forms import FormInvalid, errors_of, load_origin_lists
from app.services import tenant_settings as service
from app.services.tenant_settings import ORIGIN_LISTS
from app.web import db, settings


@bp.route("/settings", methods=["GET", "POST"])
def settings_page() -> Any:
    """The settings form; saving replaces the list, as the API's PATCH /v1/tenant does."""
    tenant = current_tenant()
    if request.method == "GET":
        lists = {field: "\n".join(getattr(tenant, field) or []) for field in ORIGIN_LISTS}
        return _page(lists, {})
    sent = {field: request.form.get(field, "") for field in ORIGIN_LISTS}
    try:
        fields = load_origin_lists(request.form)
        service.update_tenant_settings(db(), tenant, fields, settings())
    except FormInvalid as exc:
        return _page(sent, exc.errors, 422)
    except ApiError as exc:
        db().rollback()
        return _page(sent, errors_of(exc), 422)
    db().commit()
    flash("Settings saved.", "ok")
    return redirect(url_for("portal.settings_page"), code=303)


def _page(lists: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    page = render_template("portal/settings.html", errors=errors, **lists)
    return page, status
