"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from sqlalchemy import text

from app.api import Blueprint
from app.cooldown import quick_redis
from app.web import db, settings

blp = Blueprint("health", __name__, description="Probes for load balancers and orchestrators.")


@blp.route("/healthz")
@blp.doc(security=[])
@blp.response(200)
def healthz():
    """The process is up."""
    return {"status": "ok"}


@blp.route("/readyz")
@blp.doc(security=[])
@blp.response(200)
@blp.alt_response(503, description="Postgres or Redis is unreachable.")
def readyz():
    """Postgres and Redis both answer."""
    checks = {"postgres": _check_postgres(), "redis": _check_redis()}
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return (body, 200) if ready else (body, 503, {"Retry-After": "5"})


def _check_postgres() -> str:
    try:
        db().execute(text("SELECT 1"))
        db().rollback()
        return "ok"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def _check_redis() -> str:
    # A hung Redis answers nothing: the probe must say 503 rather than hang with it.
    client = quick_redis(settings().redis_url, settings().redis_timeout_seconds)
    try:
        client.ping()
        return "ok"
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
