"""Logs: one JSON object per line, carrying the ids of whatever is being worked on.

The ids (``request_id``, ``tenant_id``, ``job_id``, ``delivery_id``) live in a context variable,
so code deep in a service logs them without passing them around: ``bind_log_context`` sets them
for a block, and a filter on the handler copies them onto every record. Every line is scrubbed of
anything shaped like a secret before it is written, so a careless message cannot leak one.

No Flask here: workers import this module too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from config.settings import Settings

CONTEXT_FIELDS = ("request_id", "tenant_id", "job_id", "delivery_id")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("boomerang_log_context", default=_EMPTY)


@contextlib.contextmanager
def bind_log_context(**ids: object) -> Iterator[None]:
    """Attach ids (``job_id=...``) to every log line written inside the block; None is skipped."""
    token = _context.set(_merged(ids))
    try:
        yield
    finally:
        _context.reset(token)


def add_log_context(**ids: object) -> None:
    """Attach ids until the current scope is cleared (a web request clears it when it ends)."""
    _context.set(_merged(ids))


def clear_log_context() -> None:
    """Forget every bound id; a pooled thread must not carry one request's ids into the next."""
    _context.set(_EMPTY)


def log_context() -> Mapping[str, str]:
    """The ids bound right now."""
    return _context.get()


def _merged(ids: Mapping[str, object]) -> Mapping[str, str]:
    unknown = set(ids) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    added = {key: str(value) for key, value in ids.items() if value is not None}
    return MappingProxyType({**_context.get(), **added})


class LogContextFilter(logging.Filter):
    """Copy the bound ids onto each record. Put it on a handler, so records that propagate from
    any logger pass through it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# Shapes of the secrets this service hands out or sends. Secrets should never reach a log call;
# this is the net under that rule, not the rule itself.
_SECRET_PATTERNS = (
    # API keys: keep the public prefix, which is how an operator finds the key.
    (re.compile(r"\b(bmr_[0-9a-f]+)\.[A-Za-z0-9_\-]+"), r"\1.<redacted>"),
    # Callback and tenant signing secrets.
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_\-]+"), "whsec_<redacted>"),
    # Authorization header values, whatever the scheme's spelling.
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+"), r"\1 <redacted>"),
    # webhook-signature values (v1,<base64>).
    (re.compile(r"\bv1,[A-Za-z0-9+/=]{16,}"), "v1,<redacted>"),
    # Public redirect links: the token is what grants access to the job's status.
    (re.compile(r"(/r/)[A-Za-z0-9_\-]{16,}"), r"\1<redacted>"),
)


def redact(text: str) -> str:
    """``text`` with anything shaped like an API key, signing secret, bearer token, webhook
    signature or redirect token replaced by ``<redacted>``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_STANDARD_RECORD = logging.LogRecord("", 0, "", 0, "", (), None)
_RECORD_ATTRIBUTES = frozenset(_STANDARD_RECORD.__dict__) | {"message", "asctime", "taskName"}
_SCALARS = (str, int, float, bool, type(None))

# gunicorn logs each request with the atoms of its access-log format as the record's args; these
# are the ones worth a field. The request headers are atoms too, Authorization among them, so the
# atoms are picked by name and never dumped whole.
_ACCESS_FIELDS = {
    "remote_addr": "h",
    "method": "m",
    "path": "U",
    "status": "s",
    "bytes": "B",
    "duration_ms": "M",
    "user_agent": "a",
    "request_id": "{x-request-id}o",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the bound ids and any simple
    ``extra`` values; an exception's traceback goes in ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        access = record.name == "gunicorn.access" and isinstance(record.args, Mapping)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            # An access line's message is made from its fields, below: formatting and redacting
            # the text line too was a fifth of the cost of logging each request.
            "message": None if access else redact(record.getMessage()),
            "process": record.process,
        }
        if access:
            entry.update(_access_fields(record.args))  # type: ignore[arg-type]
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and isinstance(value, _SCALARS):
                entry.setdefault(key, redact(value) if isinstance(value, str) else value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    fields = {}
    for name, atom in _ACCESS_FIELDS.items():
        value = atoms.get(atom)
        if value in (None, "-"):
            continue
        fields[name] = redact(value) if isinstance(value, str) else value
    method, path, status = fields.get("method"), fields.get("path"), fields.get("status")
    fields["message"] = f"{method} {path} {status}"
    if isinstance(status, str) and status.isdigit():
        fields["status"] = int(status)
    return fields


class TextFormatter(logging.Formatter):
    """A plain line for people reading a terminal, the bound ids appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(name)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS if hasattr(record, key)
        )
        return redact(f"{line} {ids}" if ids else line)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``BOOMERANG_LOG_FORMAT``."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def log_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing in the configured format, with the bound ids on every record."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(settings.log_format))
    handler.addFilter(LogContextFilter())
    return handler


def configure_logging(settings: Settings) -> None:
    """Send every log record to stderr in the configured format and level, and nowhere else."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(log_handler(settings))
    root.setLevel(settings.log_level)


def connect_celery_logging(settings: Settings) -> None:
    """Have Celery's worker and beat log through ``configure_logging`` instead of setting up their
    own format. ``BOOMERANG_LOG_LEVEL`` decides the level; Celery's ``--loglevel`` is not used."""
    from celery.signals import setup_logging

    @setup_logging.connect(weak=False)
    def _setup_logging(**_kwargs: object) -> None:
        # Connecting a receiver at all is what stops Celery from configuring the root logger.
        configure_logging(settings)


def gunicorn_log_config(settings: Settings) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error and access logs, and the app's, in our format."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "boomerang",
        "filters": ["log_context"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"log_context": {"()": "app.logs.LogContextFilter"}},
        "formatters": {
            "boomerang": {"()": "app.logs.make_formatter", "log_format": settings.log_format}
        },
        "handlers": {
            "stderr": {**handler, "stream": "ext://sys.stderr"},
            "stdout": {**handler, "stream": "ext://sys.stdout"},
        },
        "root": {"level": settings.log_level, "handlers": ["stderr"]},
        "loggers": {
            # Not propagated to the root, which would write each line a second time.
            "gunicorn.error": {
                "level": settings.log_level,
                "handlers": ["stderr"],
                "propagate": False,
            },
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }
