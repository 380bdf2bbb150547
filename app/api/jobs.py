"""/v1/jobs: start slow work and poll it."""

from __future__ import annotations

import uuid

from flask import redirect, request
from flask.views import MethodView

from app.api import API_PREFIX, Blueprint
from app.clock import utcnow
from app.errors import InvalidField
from app.models import Job
from app.schemas import (
    ErrorSchema,
    JobAcceptedSchema,
    JobCreateQuerySchema,
    JobCreateSchema,
    JobListQuerySchema,
    JobPageSchema,
    JobSchema,
    JobWaitQuerySchema,
)
from app.services import jobs as service
from app.stream_tokens import STREAM_PREFIX, stream_url
from app.web import current_tenant, db, require_tenant, settings, stream_tokens
from app.web.idempotency import idempotency_key

blp = Blueprint(
    "jobs", __name__, url_prefix=f"{API_PREFIX}/jobs", description="Slow work, with results pushed."
)
blp.before_request(require_tenant)


def job_location(job_id: uuid.UUID) -> str:
    """The job's polling URL, relative to the API root."""
    return f"{blp.url_prefix}/{job_id}"


def redirect_link(job: Job) -> str | None:
    """The public link a client sends its user's browser to, when the job has a redirect_url."""
    return f"{settings().public_url}/r/{job.redirect_token}" if job.redirect_token else None


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobCreateQuerySchema, location="query")
    @blp.arguments(JobCreateSchema)
    @blp.response(202, JobAcceptedSchema)
    @blp.alt_response(
        200,
        schema=JobAcceptedSchema,
        description="A repeat of an earlier request with the same Idempotency-Key.",
    )
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="The Idempotency-Key was used before with a different body.",
    )
    def post(self, query, body):
        """Start a job. The result is POSTed to ``callback_url`` (or ``?callbackURL=``) and to every
        matching registered callback; poll ``Location`` meanwhile."""
        if "callbackURL" in query:
            if body.get("callback_url") not in (None, query["callbackURL"]):
                # Two different answers to "where do I send the result": refuse, do not guess.
                raise InvalidField(
                    "query", "callbackURL", "conflicts with callback_url in the body; send one"
                )
            body["callback_url"] = query["callbackURL"]
        key = idempotency_key()
        submission = service.submit_job(
            db(), current_tenant(), body, settings(), utcnow(), idempotency_key=key
        )
        db().commit()
        status = 202 if submission.created else 200
        job = submission.job
        # An answer-only field, read by JobAcceptedSchema; never stored.
        job.redirect_link = redirect_link(job)  # type: ignore[attr-defined]
        job.stream_url = stream_url(  # type: ignore[attr-defined]
            settings(), job.id, stream_tokens().make(job.id)
        )
        return job, status, {"Location": job_location(job.id)}

    @blp.arguments(JobListQuerySchema, location="query")
    @blp.response(200, JobPageSchema)
    def get(self, query):
        """List your jobs, newest first; pass ``next_cursor`` back as ``cursor`` for more."""
        jobs, next_cursor = service.list_jobs(
            db(),
            current_tenant(),
            status=query.get("status"),
            job_type=query.get("type"),
            limit=query["limit"],
            cursor=query.get("cursor"),
        )
        return {"data": jobs, "next_cursor": next_cursor}


@blp.route("/<uuid:job_id>")
@blp.arguments(JobWaitQuerySchema, location="query")
@blp.response(200, JobSchema)
@blp.alt_response(
    307,
    description="With ``wait``: the long poll is answered by the stream process, at the same "
    "path under /stream (the Authorization header goes along on the same origin).",
)
@blp.alt_response(404, schema=ErrorSchema, description="You have no job with this id.")
def get_job(query, job_id: uuid.UUID):
    """One job. With ``?wait=<seconds>`` (at most 60) and ``If-None-Match: <its ETag>``, the
    answer waits until the job's status or progress changes."""
    job = service.get_job(db(), current_tenant(), job_id)
    if query.get("wait"):
        # A wait would hold one of gunicorn's threads; the stream process holds thousands.
        return redirect(f"{STREAM_PREFIX}{request.full_path.rstrip('?')}", code=307)
    return job
