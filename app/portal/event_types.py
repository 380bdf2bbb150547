"""Event types: the tenant's catalogue, with a form to add a type and to change its description
or JSON Schema, and Deprecate. Each action calls the service the JSON API calls."""

from __future__ import annotations

import json
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.clock import utcnow
from app.errors import ApiError
from app.portal.auth import current_tenant
from app.portal.blueprint import bp
from app.portal.forms import errors_of
from app.services import event_types as service
from app.web import db


def _schema_from(text: str) -> tuple[Any, str | None]:
    """The schema typed into the form (blank: none), or why it is not JSON."""
    if not text.strip():
        return None, None
    try:
        return json.loads(text), None
    except ValueError as exc:
        return None, f"not JSON: {exc}"


def _catalogue_page(form: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    page = render_template(
        "portal/event_types.html",
        event_types=service.list_event_types(db(), current_tenant()),
        tenant=current_tenant(),
        form=form,
        errors=errors,
    )
    return page, status


@bp.route("/event-types", methods=["GET", "POST"])
def event_types() -> Any:
    """The catalogue, and the form that adds a type to it."""
    if request.method == "GET":
        return _catalogue_page({}, {})
    form = {name: request.form.get(name, "") for name in ("name", "description", "schema")}
    schema, problem = _schema_from(form["schema"])
    if problem:
        return _catalogue_page(form, {"schema": problem}, 422)
    try:
        fields = {"name": form["name"].strip(), "description": form["description"].strip()}
        service.create_event_type(db(), current_tenant(), {**fields, "schema": schema})
    except ApiError as exc:
        db().rollback()
        return _catalogue_page(form, errors_of(exc), 422 if exc.code == 422 else exc.code)
    db().commit()
    flash(f"Event type {form['name'].strip()} added.", "ok")
    return redirect(url_for("portal.event_types"), code=303)


@bp.route("/event-types/<name>/edit", methods=["GET", "POST"])
def edit_event_type(name: str) -> Any:
    """Change a type's description or schema."""
    event_type = service.get_event_type(db(), current_tenant(), name)
    if request.method == "GET":
        form = {
            "description": event_type.description,
            "schema": json.dumps(event_type.schema, indent=2) if event_type.schema else "",
        }
        return render_template(
            "portal/event_type_form.html", event_type=event_type, form=form, errors={}
        )
    form = {name: request.form.get(name, "") for name in ("description", "schema")}
    schema, problem = _schema_from(form["schema"])
    errors = {"schema": problem} if problem else {}
    if not errors:
        try:
            service.update_event_type(
                db(),
                current_tenant(),
                name,
                {"description": form["description"].strip(), "schema": schema},
            )
        except ApiError as exc:
            db().rollback()
            errors = errors_of(exc)
    if errors:
        page = render_template(
            "portal/event_type_form.html", event_type=event_type, form=form, errors=errors
        )
        return page, 422
    db().commit()
    flash(f"Event type {name} saved.", "ok")
    return redirect(url_for("portal.event_types"), code=303)


@bp.route("/event-types/<name>/deprecate", methods=["POST"])
def deprecate_event_type(name: str) -> Any:
    """Mark a type deprecated; its events still go out."""
    service.deprecate_event_type(db(), current_tenant(), name, utcnow())
    db().commit()
    flash(f"Event type {name} deprecated: its events still go out.", "ok")
    return redirect(url_for("portal.event_types"), code=303)
