"""A job module of the kind users name in BOOMERANG_JOB_MODULES."""

from workers.jobs import JobContext, job


@job("shout")
def shout(data: dict, ctx: JobContext) -> dict:
    """Upper-case ``text``."""
    return {"text": str(data.get("text", "")).upper()}


@job("unstorable")
def unstorable(data: dict, ctx: JobContext) -> dict:
    """Return what Postgres' JSONB refuses: NaN, or a NUL character."""
    return {"x": float("nan")} if data.get("kind") == "nan" else {"x": "a\x00b"}
