"""Deliveries: search the log (and replay what a search matches), one delivery with every
attempt's request and response, and Retry."""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.clock import utcnow
from app.errors import ApiError, Conflict
from app.models import DeliveryStatus
from app.paging import BadCursor
from app.portal import forms
from app.portal.auth import current_tenant
from app.portal.blueprint import bp
from app.schemas import DeliveryReplayRequestSchema
from app.services import callbacks as callbacks_service
from app.services import deliveries as service
from app.services import replays
from app.web import db, settings

PAGE_SIZE = 50
# While a delivery is on its way, its page reloads itself this often.
REFRESH_SECONDS = 2


@bp.route("/deliveries")
def deliveries() -> Any:
    """Search the log, newest first, with the API's filters; ``?cursor=`` pages on. When some
    filter is set, the page offers to replay what it matches."""
    raw = forms.delivery_filters_of(request.args)
    try:
        filters = forms.load_delivery_filters(raw)
    except forms.FormInvalid as exc:
        return _search_page(raw, errors=exc.errors), 422
    if filters.get("callback_id"):  # another tenant's callback is a 404, as its own page is
        callbacks_service.get_callback(db(), current_tenant(), filters["callback_id"])
    search = service.search_of(filters)
    cursor = request.args.get("cursor") or None
    try:
        page, next_cursor = service.list_deliveries(
            db(), current_tenant(), search, limit=PAGE_SIZE, cursor=cursor
        )
    except BadCursor as exc:
        raise ApiError(f"This list cannot be shown: {exc}.") from None
    replayable = replays.count_replayable(db(), current_tenant(), search) if raw else None
    return _search_page(
        raw,
        deliveries=page,
        next_cursor=next_cursor,
        paged=bool(cursor),
        replayable=replayable,
        replay_key=str(uuid.uuid4()),
    )


def _search_page(raw: dict[str, str], **context: Any) -> str:
    context.setdefault("errors", {})
    context.setdefault("deliveries", [])
    context.setdefault("replayable", None)
    return render_template(
        "portal/deliveries.html",
        filters=raw,
        statuses=[status.value for status in DeliveryStatus],
        response_classes=list(service.RESPONSE_CLASSES),
        **context,
    )


@bp.route("/deliveries/replay", methods=["POST"])
def replay_deliveries() -> Any:
    """Replay what the search matches (after the page's confirmation), as the API's POST
    /v1/deliveries/replay does; the form's key makes a double submit one replay."""
    raw = forms.delivery_filters_of(request.form)
    try:
        filters = forms.load_delivery_filters(raw, DeliveryReplayRequestSchema)
        started = replays.request_replay(
            db(),
            current_tenant(),
            service.search_of(filters),
            utcnow(),
            settings(),
            idempotency_key=request.form.get("replay_key") or None,
        )
    except forms.FormInvalid as exc:
        return _search_page(raw, errors=exc.errors), 422
    except ApiError as exc:
        db().rollback()
        return _search_page(raw, errors=forms.errors_of(exc)), exc.code
    db().commit()
    flash(
        f"Replaying {started.matched:,} deliveries in the background: each is sent again with "
        "its own webhook-id.",
        "ok",
    )
    target: dict[str, Any] = dict(raw)
    return redirect(url_for("portal.deliveries", **target), code=303)


@bp.route("/deliveries/<uuid:delivery_id>")
def delivery(delivery_id: uuid.UUID) -> Any:
    """One delivery and every attempt: request headers (signatures redacted when logged),
    response status, headers and body, and how long it took."""
    found = service.get_delivery(db(), current_tenant(), delivery_id)
    pending = found.status == DeliveryStatus.PENDING
    return render_template(
        "portal/delivery.html",
        delivery=found,
        attempts=list(reversed(found.attempts)),
        auto_refresh=REFRESH_SECONDS if pending else None,
    )


@bp.route("/deliveries/<uuid:delivery_id>/retry", methods=["POST"])
def retry_delivery(delivery_id: uuid.UUID) -> Any:
    """Send the delivery again now."""
    try:
        service.retry_delivery(db(), current_tenant(), delivery_id, utcnow(), settings())
    except Conflict as exc:
        db().rollback()
        flash(exc.message, "error")
    else:
        db().commit()
        flash("Sending again now.", "ok")
    return redirect(url_for("portal.delivery", delivery_id=delivery_id), code=303)
