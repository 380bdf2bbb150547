"""A job module of the kind users name in BOOMERANG_JOB_MODULES."""

import threading

from app.jobtypes import JobContext, job


@job("shout")
def shout(data: dict, ctx: JobContext) -> dict:
    """Upper-case ``text``."""
    return {"text": str(data.get("text", "")).upper()}


@job("unstorable")
def unstorable(data: dict, ctx: JobContext) -> dict:
    """Return what Postgres' JSONB refuses: NaN, or a NUL character."""
    return {"x": float("nan")} if data.get("kind") == "nan" else {"x": "a\x00b"}


# Set by a test to let a running "wait" job finish.
released = threading.Event()


@job("wait")
def wait(data: dict, ctx: JobContext) -> dict:
    """Run until the test releases it (at most ``seconds``), like a slow job."""
    return {"released": released.wait(float(data.get("seconds", 10)))}
