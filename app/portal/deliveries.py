"""Deliveries: a page of them, one with every attempt's request and response, and Retry."""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.clock import utcnow
from app.errors import ApiError, Conflict
from app.models import DeliveryStatus
from app.paging import BadCursor
from app.portal.auth import current_tenant
from app.portal.blueprint import bp
from app.services import callbacks as callbacks_service
from app.services import deliveries as service
from app.web import db, settings

PAGE_SIZE = 50
# While a delivery is on its way, its page reloads itself this often.
REFRESH_SECONDS = 2


def _status_filter(raw: str) -> DeliveryStatus | None:
    if not raw:
        return None
    try:
        return DeliveryStatus(raw)
    except ValueError:
        choices = ", ".join(status.value for status in DeliveryStatus)
        raise ApiError(f"Unknown status {raw!r}; choose from {choices}.") from None


def _callback_filter(raw: str) -> uuid.UUID | None:
    if not raw:
        return None
    try:
        return callbacks_service.get_callback(db(), current_tenant(), uuid.UUID(raw)).id
    except ValueError:
        raise ApiError("That is not a callback id.") from None


@bp.route("/deliveries")
def deliveries() -> Any:
    """Newest first; ``?status=`` and ``?callback=`` filter, ``?cursor=`` pages on."""
    status = _status_filter(request.args.get("status", ""))
    callback_id = _callback_filter(request.args.get("callback", ""))
    cursor = request.args.get("cursor") or None
    try:
        page, next_cursor = service.list_deliveries(
            db(),
            current_tenant(),
            service.DeliverySearch(status=status, callback_id=callback_id),
            limit=PAGE_SIZE,
            cursor=cursor,
        )
    except BadCursor as exc:
        raise ApiError(f"This list cannot be shown: {exc}.") from None
    return render_template(
        "portal/deliveries.html",
        deliveries=page,
        next_cursor=next_cursor,
        status=status.value if status else None,
        callback_id=callback_id,
        paged=bool(cursor),
        statuses=[status.value for status in DeliveryStatus],
    )


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
