"""API keys: create one (shown once), list them, revoke one; the services the API's /v1/keys
calls. Not for a session from a portal link: a link grants a short stay, and a key made during it
would outlast it."""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, url_for

from app.clock import utcnow
from app.errors import Conflict, Forbidden
from app.portal.auth import current_tenant, signed_in
from app.portal.blueprint import bp
from app.services import tenants as service
from app.web import db


def _with_a_key() -> None:
    found = signed_in()
    if found is not None and found.from_link:
        raise Forbidden(
            "You signed in with a portal link: API keys are managed by whoever holds one."
        )


@bp.route("/keys")
def api_keys() -> Any:
    """Every key, revoked ones included, never their secrets."""
    _with_a_key()
    return _page(new_key=None)


@bp.route("/keys", methods=["POST"])
def create_api_key() -> Any:
    """A new key, shown on the answer page this once (never put in the cookie, as a flash
    message would be)."""
    _with_a_key()
    new = service.issue_api_key(db(), current_tenant())
    db().commit()
    return _page(new_key=new.api_key), 201


@bp.route("/keys/<uuid:key_id>/revoke", methods=["POST"])
def revoke_api_key(key_id: uuid.UUID) -> Any:
    """Revoke a key: requests made with it, and portal sessions signed in with it, end now."""
    _with_a_key()
    try:
        key = service.revoke_api_key(db(), current_tenant(), key_id, utcnow())
    except Conflict as refused:
        db().rollback()
        flash(refused.message, "error")
        return redirect(url_for("portal.api_keys"), code=303)
    db().commit()
    flash(f"Key {key.prefix} is revoked.", "ok")
    return redirect(url_for("portal.api_keys"), code=303)


def _page(new_key: str | None) -> str:
    keys = service.list_api_keys(db(), current_tenant())
    return render_template("portal/api_keys.html", keys=keys, new_key=new_key)
