"""Content filters: a callback may carry a CEL (Common Expression Language) expression over an
event's ``type``, ``data``, ``channels`` and ``timestamp``, and hears only events it is true for
(``data.amount > 100 && data.currency == "EUR"``).

CEL is the language Kubernetes, Envoy and Google's IAM use for exactly this: no loops but over
the event's own lists, no side effects. The engine is ``common-expression-language``, Rust's
cel-interpreter behind a thin binding, chosen over the pure-Python ``cel-python`` for speed (about
13 µs an evaluation here, and every event is checked against every filtered callback) and because
its regular expressions run in linear time. It has no cost limit of its own, so the bound is set
here: an expression is at most 1,000 characters with at most one comprehension macro (``all``,
``exists``, ``exists_one``, ``map``, ``filter``), which makes an evaluation linear in the event's
size (itself at most BOOMERANG_MAX_PAYLOAD_BYTES).

A filter is compiled when it is set (a syntax error is a 422 with the parser's message) and tried
on an empty event: one that already yields something other than true or false is refused. An
expression that fails on a given event (a missing field, a type mismatch) or does not yield a
boolean skips that event for that callback, logs why, and counts it; it never stops the others.
The outbox writes that callback's delivery cancelled, with why as its one attempt's error.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

import cel

from app import metrics

log = logging.getLogger(__name__)

MAX_FILTER_LENGTH = 1000
MAX_COMPREHENSIONS = 1
_COMPREHENSION = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(")
# What a filter sees of an event that has nothing in it: enough to tell "not a boolean" early.
_EMPTY_EVENT = {"type": "", "data": {}, "channels": [], "timestamp": ""}


class FilterError(Exception):
    """A filter could not decide on one event."""


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> Any:
    return cel.compile(expression)


def filter_problem(expression: str) -> str | None:
    """Why ``expression`` cannot be a callback's filter, or None."""
    if len(expression) > MAX_FILTER_LENGTH:
        return f"must be at most {MAX_FILTER_LENGTH} characters"
    if len(_COMPREHENSION.findall(expression)) > MAX_COMPREHENSIONS:
        return (
            f"may use at most {MAX_COMPREHENSIONS} of all, exists, exists_one, map and filter, "
            "so that checking an event stays linear in its size"
        )
    try:
        program = _compiled(expression)
    except ValueError as exc:
        return f"does not compile: {exc}"
    try:
        result = program.execute(_EMPTY_EVENT)
    except Exception:  # a field the empty event lacks: decided per event
        return None
    if not isinstance(result, bool):
        return f"must yield true or false, not {type(result).__name__} ({result!r})"
    return None


def event_context(
    event_type: str, data: Any, channels: list[str], timestamp: datetime
) -> dict[str, Any]:
    """What a filter sees of an event."""
    return {
        "type": event_type,
        "data": data,
        "channels": list(channels),
        "timestamp": timestamp.isoformat(),
    }


def passes(expression: str, context: dict[str, Any]) -> bool:
    """Whether the event passes the filter; FilterError when the filter cannot decide."""
    try:
        result = _compiled(expression).execute(context)
    except Exception as exc:  # the engine raises KeyError, TypeError, ValueError...
        raise FilterError(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(result, bool):
        raise FilterError(f"yielded {type(result).__name__} ({result!r}), not true or false")
    return result


class Verdicts(NamedTuple):
    """Which filtered callbacks do not hear an event: ``skipped`` by their filter, or ``failed``
    because it could not decide (with why)."""

    skipped: list[Any]
    failed: dict[Any, str]


def skipped_by(
    filters: list[tuple[Any, str]], context: dict[str, Any], message_id: Any
) -> Verdicts:
    """Judge the event by each (id, filter) pair. A filter that cannot decide is logged and
    counted, never raised: one odd event must not stop the pipeline."""
    verdicts = Verdicts([], {})
    for callback_id, expression in filters:
        try:
            if not passes(expression, context):
                verdicts.skipped.append(callback_id)
        except FilterError as exc:
            log.warning(
                "callback %s: its filter failed on message %s, so it does not hear it: %s",
                callback_id,
                message_id,
                exc,
            )
            metrics.filter_failed()
            verdicts.failed[callback_id] = str(exc)
    return verdicts
