"""A trivial Flask app served by the same gunicorn config, as the ingest benchmark's reference.

gunicorn --config python:app.web.gunicorn 'bench.trivial_app:create_app()'
"""

from __future__ import annotations

import uuid

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask("trivial")

    @app.post("/v1/jobs")
    def submit():
        request.get_json(silent=True)
        return jsonify({"id": str(uuid.uuid4()), "status": "queued"}), 202

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True})

    return app
