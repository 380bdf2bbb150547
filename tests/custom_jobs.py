"""A job module of the kind users name in BOOMERANG_JOB_MODULES."""

from workers.jobs import JobContext, job


@job("shout")
def shout(data: dict, ctx: JobContext) -> dict:
    """Upper-case ``text``."""
    return {"text": str(data.get("text", "")).upper()}
