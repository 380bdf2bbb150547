"""Signing in with an API key and signing out."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.portal import auth
from app.portal.blueprint import bp
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
