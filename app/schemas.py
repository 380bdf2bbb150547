"""Marshmallow schemas, input and output apart: ``<Resource><Role>Schema``.

Plain marshmallow (no Flask), so workers render event payloads with the same ``JobSchema`` the
API answers with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates

from app.formats import format_names
from app.services.events import SUBSCRIBABLE_EVENT_TYPES

_URL = fields.Url(schemes={"http", "https"}, require_tld=False)


def _check_event_types(value: list[str]) -> None:
    unknown = sorted(set(value) - set(SUBSCRIBABLE_EVENT_TYPES))
    if unknown:
        raise ValidationError(
            f"unknown event type {unknown[0]!r}; choose from {', '.join(SUBSCRIBABLE_EVENT_TYPES)}"
        )


# Deep enough for any real document, shallow enough that no encoder on the way to Postgres, the
# worker or a receiver runs out of stack (Python's JSON encoder recurses).
MAX_JSON_DEPTH = 100


def _unstorable(value: Any) -> str | None:
    """Why ``value`` cannot be stored and sent on, or None. Walked without recursion, since JSON
    input may nest as deep as the decoder allows."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"must not nest deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, str) and "\x00" in item:
            return "must not contain NUL (\\u0000) characters"
        if isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite (no NaN or Infinity)"
        if isinstance(item, Mapping):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


class InputSchema(Schema):
    """Base of every request schema: what cannot be stored is a 422 naming the field, not a 500
    from the driver (text refuses NUL; JSON has no NaN or Infinity) or the encoder."""

    @pre_load
    def _refuse_unstorable(self, data: Any, **_kwargs: object) -> Any:
        if isinstance(data, Mapping):
            for name, value in data.items():
                problem = _unstorable(value)
                if problem:
                    raise ValidationError(problem, field_name=name)
        return data


class ErrorSchema(Schema):
    """The one error shape, documented for every error response in the OpenAPI document."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = fields.String(required=True, metadata={"description": "The status's phrase."})
    message = fields.String(required=True, metadata={"description": "What went wrong."})
    # A location maps field names to messages, or holds messages about itself ("json": ["Invalid
    # JSON body."]), so its value is left open.
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        metadata={"description": "Input errors by location (json, query, headers)."},
    )


class CallbackCreateSchema(InputSchema):
    url = fields.Url(schemes={"http", "https"}, require_tld=False, required=True)
    event_types = fields.List(
        fields.String(), validate=[validate.Length(min=1), _check_event_types]
    )
    description = fields.String(validate=validate.Length(max=1000), allow_none=True)
    success_status = fields.Integer(validate=validate.Range(min=100, max=599), allow_none=True)
    headers = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=100)),
        values=fields.String(validate=validate.Length(max=1000)),
        metadata={"description": "Extra headers sent with every delivery."},
    )
    format = fields.String(
        validate=validate.OneOf(format_names()),
        metadata={
            "description": "The body format: `envelope` (Standard Webhooks, the default) or "
            "`cloudevents` (CloudEvents 1.0, structured mode)."
        },
    )
    format_version = fields.Integer(
        strict=True,
        validate=validate.Range(min=1),
        metadata={
            "description": "The format's version to pin; by default its newest. Changing the "
            "format without one pins the new format's newest version."
        },
    )


class CallbackUpdateSchema(CallbackCreateSchema):
    url = fields.Url(schemes={"http", "https"}, require_tld=False)
    enabled = fields.Boolean()


class CallbackSchema(Schema):
    id = fields.UUID()
    url = fields.String()
    event_types = fields.List(fields.String())
    description = fields.String(allow_none=True)
    success_status = fields.Integer(allow_none=True)
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    format = fields.String()
    format_version = fields.Integer()
    enabled = fields.Boolean()
    disabled_reason = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class CallbackWithSecretSchema(CallbackSchema):
    """Only on creation and rotation: the one time the secret is shown."""

    secret = fields.String()


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time, naive ones read as UTC, handed on in UTC. Postgres refuses offsets
    beyond 15:59 that Python accepts (``-16:49`` was a 500), and a UTC value cannot carry one."""

    def __init__(self, **kwargs: Any):
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past the last UTC year
            raise ValidationError("is out of the supported date range") from None


class CallbackRecoverQuerySchema(InputSchema):
    since = UtcDateTime(required=True)


class CallbackRecoveredSchema(Schema):
    recovered = fields.Integer()


class CallbackListSchema(Schema):
    data = fields.List(fields.Nested(CallbackSchema))


class JobCreateSchema(InputSchema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    input = fields.Dict(keys=fields.String(), load_default=dict)
    callback_url = fields.Url(schemes={"http", "https"}, require_tld=False, allow_none=True)
    redirect_url = fields.Url(schemes={"http", "https"}, require_tld=False, allow_none=True)


class JobCreateQuerySchema(InputSchema):
    callbackURL = fields.Url(schemes={"http", "https"}, require_tld=False)


class JobSchema(Schema):
    id = fields.UUID()
    type = fields.String()
    status = fields.Function(lambda job: job.status.value)
    input = fields.Raw()
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    progress = fields.Raw(allow_none=True)
    attempts = fields.Integer()
    callback_url = fields.String(allow_none=True)
    redirect_url = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class JobAcceptedSchema(JobSchema):
    redirect_link = fields.String(allow_none=True)


class JobListQuerySchema(InputSchema):
    status = fields.String(validate=validate.OneOf(["queued", "running", "succeeded", "failed"]))
    type = fields.String()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String()

    @validates("cursor")
    def _cursor_is_opaque(self, value: str, **_kwargs: object) -> None:
        from app.services.jobs import decode_cursor

        decode_cursor(value)


class JobPageSchema(Schema):
    data = fields.List(fields.Nested(JobSchema))
    next_cursor = fields.String(allow_none=True)


class DeliveryAttemptSchema(Schema):
    id = fields.UUID()
    attempted_at = fields.DateTime()
    request_headers = fields.Dict(keys=fields.String(), values=fields.String())
    response_status = fields.Integer(allow_none=True)
    response_headers = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    response_body = fields.String(allow_none=True)
    response_body_truncated = fields.Boolean()
    duration_ms = fields.Integer()
    succeeded = fields.Boolean()
    error = fields.String(allow_none=True)


class DeliverySchema(Schema):
    id = fields.UUID()
    webhook_id = fields.Function(lambda d: f"msg_{d.message_id.hex}")
    event_type = fields.Function(lambda d: d.message.event_type)
    job_id = fields.Function(lambda d: str(d.message.job_id) if d.message.job_id else None)
    callback_id = fields.UUID(allow_none=True)
    url = fields.String()
    status = fields.Function(lambda d: d.status.value)
    attempt_count = fields.Integer()
    next_attempt_at = fields.DateTime(allow_none=True)
    last_attempt_at = fields.DateTime(allow_none=True)
    succeeded_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    attempts = fields.List(fields.Nested(DeliveryAttemptSchema))


class DeliveryListSchema(Schema):
    data = fields.List(fields.Nested(DeliverySchema))


class CallbackSecretSchema(Schema):
    """The callback's signing secret; the previous one only while its rotation grace runs."""

    secret = fields.String()
    previous_secret = fields.String()
    previous_secret_expires_at = fields.DateTime()


class ApiKeySchema(Schema):
    """An API key as listed: never its secret, nor the secret's hash."""

    id = fields.UUID()
    prefix = fields.String()
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)


class ApiKeyCreatedSchema(Schema):
    """Only on creation: the one time the whole key is shown."""

    id = fields.UUID()
    prefix = fields.String()
    api_key = fields.String()
    created_at = fields.DateTime()


class ApiKeyListSchema(Schema):
    data = fields.List(fields.Nested(ApiKeySchema))
