"""Built-in job types for demos and tests."""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from typing import Any

from app.jobtypes import JobContext, job


@job("echo")
def echo(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Return the input unchanged."""
    return data


@job("sleep")
def sleep(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Wait ``seconds`` (at most 3600), reporting progress about once a second."""
    seconds = float(data.get("seconds", 1))
    if not 0 <= seconds <= 3600:
        raise ValueError("seconds must be between 0 and 3600")
    steps = max(1, min(int(seconds), 100))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        ctx.progress(100 * step / steps, f"slept {seconds * step / steps:g} of {seconds:g} s")
    return {"slept_seconds": seconds}


@job("fail")
def fail(data: dict[str, Any], ctx: JobContext) -> None:
    """Always fail, with ``message`` as the error."""
    raise RuntimeError(str(data.get("message", "this job always fails")))


@job("digest")
def digest(data: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Hash and summarise ``text``: SHA-256, counts, and the most frequent words."""
    text = data.get("text")
    if not isinstance(text, str):
        raise ValueError("input.text must be a string")
    words = re.findall(r"[\w']+", text.lower())
    return {
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "characters": len(text),
        "words": len(words),
        "lines": text.count("\n") + 1 if text else 0,
        "top_words": [[word, count] for word, count in Counter(words).most_common(5)],
    }
