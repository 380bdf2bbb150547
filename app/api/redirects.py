"""Public redirect links: a waiting page while the job runs, then 303 to the client's page."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import make_response, redirect, render_template, request

from app.api import Blueprint
from app.errors import NotFound
from app.models import JobStatus
from app.services.jobs import get_job_by_redirect_token
from app.services.tenant_settings import is_redirect_target
from app.signing import sign_redirect
from app.stream_tokens import stream_url
from app.web import db, settings, stream_tokens

blp = Blueprint(
    "redirects",
    __name__,
    url_prefix="/r",
    description="Browser-facing links; the token is the only credential.",
)

REFRESH_SECONDS = 2
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def signed_return_url(redirect_url: str, job_id: str, status: str, secret: str) -> str:
    """``redirect_url`` with ``job_id``, ``status`` and ``signature`` added to its query."""
    parts = urlsplit(redirect_url)
    added = {"job_id": job_id, "status": status, "signature": sign_redirect(secret, job_id, status)}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in added]
    return urlunsplit(parts._replace(query=urlencode([*query, *added.items()])))


@blp.route("/<token>")
@blp.doc(security=[])
@blp.response(303, description="The job finished: go to the client's return page.")
@blp.alt_response(200, description="An HTML page that refreshes until the job finishes.")
def follow(token: str):
    """Show progress until the job ends, then send the browser back to the client's site."""
    # Only the shape a token is minted in reaches the database (a NUL would make the driver fail).
    job = get_job_by_redirect_token(db(), token) if TOKEN_SHAPE.fullmatch(token) else None
    # The origin is checked again: a tenant that removes an origin stops the links to it.
    if (
        job is None
        or job.redirect_url is None
        or not is_redirect_target(job.tenant, job.redirect_url)
    ):
        raise NotFound("No such link.")
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        target = signed_return_url(
            job.redirect_url, str(job.id), job.status.value, job.tenant.signing_secret
        )
        response = redirect(target, code=303)
    else:
        percent = (job.progress or {}).get("percent")
        response = make_response(
            render_template(
                "waiting.html",
                job=job,
                percent=percent,
                message=(job.progress or {}).get("message"),
                refresh_seconds=REFRESH_SECONDS,
                stream_url=stream_url(settings(), job.id, stream_tokens().make(job.id)),
                return_url=request.path,
            )
        )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
