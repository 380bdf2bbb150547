"""HTML forms in, the API's own input schemas out.

A form is turned into the JSON body the API would have received and loaded with the same
marshmallow schema, then handed to the same service, so the portal can never accept what the API
refuses (the URL guard's SSRF rules and the header rules live in the service, and both answer here
as they do there). Errors come back as one message per form field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app.errors import ApiError
from app.headers import masked_headers
from app.models import Callback
from app.schemas import (
    CallbackCreateSchema,
    CallbackRecoverQuerySchema,
    CallbackUpdateSchema,
    DeliveryFilterSchema,
    TenantUpdateSchema,
)


class FormInvalid(Exception):
    """The form has errors, by field name."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(errors)
        self.errors = errors


def _messages(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [message for nested in value.values() for message in _messages(nested)]
    if isinstance(value, list | tuple):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


def field_errors(errors: Mapping[str, Any]) -> dict[str, str]:
    """Schema or ApiError errors (``{field: [...]}`` or ``{location: {field: [...]}}``) as one
    message per field."""
    flat: dict[str, str] = {}
    for name, value in errors.items():
        if name in {"json", "query", "form"} and isinstance(value, Mapping):
            flat.update(field_errors(value))
        else:
            flat[name] = "; ".join(_messages(value))
    return flat


def errors_of(exc: ApiError) -> dict[str, str]:
    """The fields an ApiError names, or its message under ``_form`` when it names none."""
    return field_errors(exc.errors) if exc.errors else {"_form": exc.message}


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` lines; blank lines are skipped."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise FormInvalid({"headers": f"line {number} is not 'Name: value'"})
        if name.strip() in headers:
            raise FormInvalid({"headers": f"{name.strip()!r} is named twice"})
        headers[name.strip()] = value.strip()
    return headers


def format_headers(headers: Mapping[str, str]) -> str:
    """The textarea's text for ``headers``."""
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


def _words(text: str) -> list[str]:
    """Names typed into one field, separated by commas or white space."""
    return [word for word in re.split(r"[\s,]+", text) if word]


@dataclass
class CallbackForm:
    """What the callback form shows: the values to fill in and the errors to point at."""

    url: str = ""
    event_types: list[str] = field(default_factory=list)
    channels: str = ""
    filter: str = ""
    description: str = ""
    success_status: str = ""
    max_concurrency: str = ""
    rate_limit_per_second: str = ""
    retry_schedule: str = ""
    headers: str = ""
    format: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_request(cls, form: MultiDict[str, str]) -> CallbackForm:
        """The values as sent, to show again beside their errors."""
        return cls(
            url=form.get("url", "").strip(),
            # Boomerang's own, ticked; then the tenant's own types and wildcards, typed in.
            event_types=form.getlist("event_types") + _words(form.get("other_event_types", "")),
            channels=form.get("channels", "").strip(),
            filter=form.get("filter", "").strip(),
            description=form.get("description", "").strip(),
            success_status=form.get("success_status", "").strip(),
            max_concurrency=form.get("max_concurrency", "").strip(),
            rate_limit_per_second=form.get("rate_limit_per_second", "").strip(),
            retry_schedule=form.get("retry_schedule", "").strip(),
            headers=form.get("headers", ""),
            format=form.get("format", ""),
        )

    @classmethod
    def from_callback(cls, callback: Callback) -> CallbackForm:
        """The values a callback has now, for its edit form."""
        return cls(
            url=callback.url,
            event_types=list(callback.event_types),
            channels=", ".join(callback.channels),
            filter=callback.filter or "",
            description=callback.description or "",
            success_status=str(callback.success_status or ""),
            max_concurrency=str(callback.max_concurrency or ""),
            rate_limit_per_second=(
                f"{callback.rate_limit_per_second:g}" if callback.rate_limit_per_second else ""
            ),
            retry_schedule=(
                ", ".join(str(delay) for delay in callback.retry_schedule)
                if callback.retry_schedule is not None
                else ""
            ),
            # Credentials stay masked; sent back unchanged, they keep their stored value.
            headers=format_headers(masked_headers(callback.headers or {})),
            format=callback.format,
        )

    def body(self) -> dict[str, Any]:
        """The JSON body the API would receive for this form; every field is sent, so clearing
        one (the description, the success status, the headers) clears it."""
        body: dict[str, Any] = {
            "url": self.url,
            "event_types": self.event_types,
            "channels": _words(self.channels),
            "filter": self.filter or None,
            "description": self.description or None,
            # Numbers typed into the form; anything else goes on for the schema to refuse.
            "success_status": _typed_number(self.success_status, int),
            "max_concurrency": _typed_number(self.max_concurrency, int),
            "rate_limit_per_second": _typed_number(self.rate_limit_per_second, float),
            # Blank: the service's schedule; "-": never retry.
            "retry_schedule": (
                None
                if not self.retry_schedule
                else []
                if self.retry_schedule == "-"
                else [_typed_number(delay, int) for delay in _words(self.retry_schedule)]
            ),
            "headers": parse_headers(self.headers),
        }
        if self.format:
            body["format"] = self.format
        return body

    def load(self, *, creating: bool) -> dict[str, Any]:
        """The body, validated by the API's create or update schema; FormInvalid otherwise."""
        schema = CallbackCreateSchema() if creating else CallbackUpdateSchema(partial=True)
        try:
            return schema.load(self.body())
        except ValidationError as exc:
            raise FormInvalid(field_errors(exc.normalized_messages())) from None


def _typed_number(text: str, kind: type[int] | type[float]) -> Any:
    """A number typed into a form as ``kind``; empty as None; anything else as typed."""
    if not text:
        return None
    try:
        return kind(text) if text.isascii() else text
    except ValueError:
        return text


def load_recover_since(form: MultiDict[str, str]) -> Any:
    """A recovery form's ``since`` (a UTC date and time), read as the API's query reads it."""
    raw = form.get("since", "").strip()
    try:
        return CallbackRecoverQuerySchema().load({"since": raw})["since"]
    except ValidationError as exc:
        raise FormInvalid(field_errors(exc.normalized_messages())) from None


def load_origin_lists(form: MultiDict[str, str]) -> dict[str, Any]:
    """The settings form (one origin per line in each list) as the API's PATCH /v1/tenant body,
    validated by its schema; FormInvalid otherwise."""
    body = {
        field: [line.strip() for line in form.get(field, "").splitlines() if line.strip()]
        for field in ("redirect_origins", "cors_origins")
    }
    try:
        return TenantUpdateSchema().load(body)
    except ValidationError as exc:
        raise FormInvalid(field_errors(exc.normalized_messages())) from None


DELIVERY_FILTERS = (
    "status",
    "callback_id",
    "event_type",
    "webhook_id",
    "job_id",
    "since",
    "until",
    "response",
)


def delivery_filters_of(values: Mapping[str, str]) -> dict[str, str]:
    """The search form's filled-in fields (``?callback=``, as older links say, is callback_id)."""
    raw = {name: values.get(name, "").strip() for name in DELIVERY_FILTERS}
    if not raw["callback_id"]:
        raw["callback_id"] = values.get("callback", "").strip()
    return {name: value for name, value in raw.items() if value}


def load_delivery_filters(
    filled: Mapping[str, str], schema: type[DeliveryFilterSchema] = DeliveryFilterSchema
) -> dict[str, Any]:
    """The search form's filled-in fields (``delivery_filters_of``) as the API reads its filters
    (``GET /v1/deliveries``, or with ``DeliveryReplayRequestSchema`` a replay's); FormInvalid
    otherwise."""
    try:
        return schema().load(dict(filled))
    except ValidationError as exc:
        raise FormInvalid(field_errors(exc.normalized_messages())) from None
