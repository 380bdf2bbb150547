"""The tutorial's web half: a view that checks the API key, INSERTs the job, commits and calls
``run_job.delay()``. Served by the same gunicorn configuration as Boomerang's web.

    gunicorn --config python:app.web.gunicorn 'bench.naive.web:create_app()'
"""

from __future__ import annotations

import json
import os
import uuid

from flask import Flask, jsonify, request
from sqlalchemy import create_engine, text

from bench.naive.app import run_job


def create_app() -> Flask:
    """The Flask app, on a pooled engine as a tutorial would make it."""
    app = Flask(__name__)
    url = os.environ["NAIVE_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://")
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/v1/jobs")
    def create_job():
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return jsonify(error="type is required"), 422
        job_id = uuid.uuid4()
        with engine.begin() as conn:
            tenant_id = conn.execute(
                text("SELECT id FROM naive_tenant WHERE api_key = :key"), {"key": token}
            ).scalar()
            if tenant_id is None:
                return jsonify(error="bad API key"), 401
            conn.execute(
                text(
                    "INSERT INTO naive_job (id, tenant_id, type, input, status)"
                    " VALUES (:id, :tenant, :type, CAST(:input AS jsonb), 'queued')"
                ),
                {
                    "id": job_id,
                    "tenant": tenant_id,
                    "type": body["type"],
                    "input": json.dumps(body.get("input") or {}),
                },
            )
        run_job.delay(str(job_id))
        return jsonify(id=str(job_id), status="queued"), 202

    return app
