"""Callbacks: list, register, edit, enable or disable, delete, rotate and reveal the secret, send
a test event, recover failed deliveries. Each action calls the service the JSON API calls."""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.clock import utcnow
from app.errors import ApiError, InvalidField
from app.events import DEFAULT_EVENT_TYPES, SUBSCRIBABLE_EVENT_TYPES
from app.formats import format_names
from app.portal import charts
from app.portal.auth import current_tenant
from app.portal.blueprint import bp
from app.portal.forms import CallbackForm, FormInvalid, errors_of, load_recover_since
from app.services import callbacks as service
from app.services import deliveries as deliveries_service
from app.services import stats
from app.web import db, settings

RECENT_DELIVERIES = 20


def _form_page(template: str, form: CallbackForm, status: int = 200, **context: Any) -> Any:
    return (
        render_template(
            template,
            form=form,
            event_types=SUBSCRIBABLE_EVENT_TYPES,
            formats=format_names(),
            **context,
        ),
        status,
    )


@bp.route("/callbacks")
def callbacks() -> Any:
    """Every callback of the tenant."""
    return render_template(
        "portal/callbacks.html", callbacks=service.list_callbacks(db(), current_tenant())
    )


@bp.route("/callbacks/new", methods=["GET", "POST"])
def new_callback() -> Any:
    """Register a callback."""
    if request.method == "GET":
        form = CallbackForm(event_types=list(DEFAULT_EVENT_TYPES))
        return _form_page("portal/callback_form.html", form, callback=None)
    form = CallbackForm.from_request(request.form)
    try:
        body = form.load(creating=True)
        callback = service.create_callback(db(), current_tenant(), body, settings())
    except (FormInvalid, ApiError) as exc:
        db().rollback()
        form.errors = exc.errors if isinstance(exc, FormInvalid) else errors_of(exc)
        return _form_page("portal/callback_form.html", form, 422, callback=None)
    db().commit()
    flash("Callback registered. Reveal its signing secret below to set up your receiver.", "ok")
    return redirect(url_for("portal.callback", callback_id=callback.id), code=303)


def _callback_page(callback_id: uuid.UUID, status: int = 200, **context: Any) -> Any:
    tenant = current_tenant()
    callback = service.get_callback(db(), tenant, callback_id)
    deliveries, _ = deliveries_service.list_deliveries(
        db(),
        tenant,
        deliveries_service.DeliverySearch(callback_id=callback.id),
        limit=RECENT_DELIVERIES,
    )
    health = next(
        (h for h in stats.callback_health(db(), tenant, utcnow()) if h.callback.id == callback.id),
        None,
    )
    context.setdefault("recover_error", None)
    context.setdefault("secrets", None)
    return (
        render_template(
            "portal/callback.html",
            callback=callback,
            deliveries=deliveries,
            health=health,
            charts=charts,
            **context,
        ),
        status,
    )


@bp.route("/callbacks/<uuid:callback_id>")
def callback(callback_id: uuid.UUID) -> Any:
    """One callback: its settings, health, recent deliveries and actions."""
    return _callback_page(callback_id)


@bp.route("/callbacks/<uuid:callback_id>/edit", methods=["GET", "POST"])
def edit_callback(callback_id: uuid.UUID) -> Any:
    """Change the URL, event types, format and the rest."""
    tenant = current_tenant()
    callback = service.get_callback(db(), tenant, callback_id)
    if request.method == "GET":
        form = CallbackForm.from_callback(callback)
        return _form_page("portal/callback_form.html", form, callback=callback)
    form = CallbackForm.from_request(request.form)
    try:
        body = form.load(creating=False)
        service.update_callback(db(), tenant, callback_id, body, settings())
    except (FormInvalid, ApiError) as exc:
        db().rollback()
        form.errors = exc.errors if isinstance(exc, FormInvalid) else errors_of(exc)
        callback = service.get_callback(db(), tenant, callback_id)
        return _form_page("portal/callback_form.html", form, 422, callback=callback)
    db().commit()
    flash("Callback saved.", "ok")
    return redirect(url_for("portal.callback", callback_id=callback_id), code=303)


@bp.route("/callbacks/<uuid:callback_id>/enable", methods=["POST"])
def enable_callback(callback_id: uuid.UUID) -> Any:
    """Turn a disabled callback back on, with a clean failure streak (as the API's enable)."""
    service.enable_callback(db(), current_tenant(), callback_id)
    db().commit()
    flash("Callback enabled.", "ok")
    return redirect(url_for("portal.callback", callback_id=callback_id), code=303)


@bp.route("/callbacks/<uuid:callback_id>/disable", methods=["POST"])
def disable_callback(callback_id: uuid.UUID) -> Any:
    """Stop sending to the callback until it is enabled again."""
    service.update_callback(db(), current_tenant(), callback_id, {"enabled": False}, settings())
    db().commit()
    flash("Callback disabled: nothing is sent to it until you enable it.", "ok")
    return redirect(url_for("portal.callback", callback_id=callback_id), code=303)


@bp.route("/callbacks/<uuid:callback_id>/delete", methods=["POST"])
def delete_callback(callback_id: uuid.UUID) -> Any:
    """Delete the callback, cancelling what still waited to reach it (as the API's DELETE); its
    deliveries stay in the log."""
    url = service.delete_callback(db(), current_tenant(), callback_id).url
    db().commit()
    flash(f"Callback {url} deleted; what was still waiting to reach it was cancelled.", "ok")
    return redirect(url_for("portal.callbacks"), code=303)


@bp.route("/callbacks/<uuid:callback_id>/secret", methods=["POST"])
def reveal_secret(callback_id: uuid.UUID) -> Any:
    """Show the signing secret (and the previous one during a rotation), asked for by a button
    so it never sits in a page by default."""
    callback = service.get_callback(db(), current_tenant(), callback_id)
    now = utcnow()
    shown = {"secret": callback.secret}
    if len(service.signing_secrets(callback, now)) > 1:
        shown["previous_secret"] = callback.previous_secret or ""
    return _callback_page(callback_id, secrets=shown)


@bp.route("/callbacks/<uuid:callback_id>/rotate-secret", methods=["POST"])
def rotate_secret(callback_id: uuid.UUID) -> Any:
    """Issue a new secret; the old one keeps signing beside it for the grace period."""
    service.rotate_secret(db(), current_tenant(), callback_id, utcnow(), settings())
    db().commit()
    hours = settings().secret_rotation_grace_seconds / 3600
    flash(
        f"Secret rotated. The previous one keeps signing beside it for {hours:g} h; reveal the "
        "new one to update your receiver.",
        "ok",
    )
    return redirect(url_for("portal.callback", callback_id=callback_id), code=303)


@bp.route("/callbacks/<uuid:callback_id>/test", methods=["POST"])
def send_test(callback_id: uuid.UUID) -> Any:
    """Send a ``callback.test`` event now and show its delivery."""
    delivery = service.send_test_event(db(), current_tenant(), callback_id, utcnow())
    db().commit()
    flash("Test event queued.", "ok")
    return redirect(url_for("portal.delivery", delivery_id=delivery.id), code=303)


@bp.route("/callbacks/<uuid:callback_id>/recover", methods=["POST"])
def recover_callback(callback_id: uuid.UUID) -> Any:
    """Send again every failed delivery to the callback since a moment (after an outage)."""
    tenant = current_tenant()
    try:
        since = load_recover_since(request.form)
        count = service.recover_callback(db(), tenant, callback_id, since, utcnow(), settings())
    except (FormInvalid, InvalidField) as exc:
        db().rollback()
        errors = exc.errors if isinstance(exc, FormInvalid) else errors_of(exc)
        return _callback_page(callback_id, 422, recover_error=errors.get("since", str(errors)))
    db().commit()
    flash(f"{count} failed deliver{'y' if count == 1 else 'ies'} queued to be sent again.", "ok")
    return redirect(url_for("portal.callback", callback_id=callback_id), code=303)
