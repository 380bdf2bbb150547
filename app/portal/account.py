"""Signing in with an API key and signing out."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.clock import utcnow
from app.models import Tenant
from app.portal import auth
from app.portal.blueprint import bp
from app.services.portal_links import LinkProblem, LinkRefused, check_link
from app.web import db


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    """The sign-in form; a right key starts a session and opens the dashboard."""
    if request.method == "GET":
        if auth.signed_in_tenant() is not None:
            return redirect(url_for("portal.dashboard"), code=303)
        return render_template("portal/sign_in.html", error=None)
    tenant = auth.sign_in(request.form.get("api_key", ""))
    if tenant is None:
        error = "That API key is not valid or was revoked."
        return render_template("portal/sign_in.html", error=error), 422
    db().commit()
    return redirect(url_for("portal.dashboard"), code=303)


@bp.route("/sign-out", methods=["POST"])
def sign_out() -> Any:
    """End the session, on the server too."""
    auth.sign_out()
    db().commit()
    flash("You are signed out.", "info")
    return redirect(url_for("portal.sign_in"), code=303)


@bp.route("/link/<token>", methods=["GET", "POST"])
def link(token: str) -> Any:
    """A portal link: the page says whose portal it opens; its button uses the link up. Only the
    POST signs in, so a mail scanner or chat preview that fetches the URL does not spend it."""
    try:
        if request.method == "GET":
            found = check_link(db(), token, utcnow())
            tenant = db().get(Tenant, found.tenant_id)
            return render_template("portal/link.html", link_tenant=tenant, link=found)
        auth.sign_in_with_link(token)
    except LinkRefused as refused:
        db().rollback()
        code = 404 if refused.problem == LinkProblem.UNKNOWN else 410
        return render_template("portal/link_refused.html", message=refused.problem.value), code
    db().commit()
    return redirect(url_for("portal.dashboard"), code=303)
