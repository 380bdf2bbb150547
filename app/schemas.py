"""Marshmallow schemas, input and output apart: ``<Resource><Role>Schema``.

Plain marshmallow (no Flask), so workers render event payloads with the same ``JobSchema`` the
API answers with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from app.events import channels_problem, publishable_problem, subscription_problem, webhook_id
from app.filters import filter_problem
from app.formats import format_names
from app.headers import masked_headers
from app.models import DeliveryStatus, JobStatus
from app.paging import BadCursor, decode_cursor
from app.services.deliveries import RESPONSE_CLASSES
from app.services.published import MAX_BATCH

# Longer than any real endpoint, short enough that a URL cannot be a payload of its own.
MAX_URL_LENGTH = 2048


def url_field(**kwargs: Any) -> fields.Url:
    """An http(s) URL; hosts without a dot are fine here (the SSRF guard decides what is
    reachable)."""
    return fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=MAX_URL_LENGTH),
        **kwargs,
    )


class StrictBoolean(fields.Boolean):
    """true or false, and nothing that merely looks like one ("yes", 1, "on")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def strict_boolean(**kwargs: Any) -> fields.Boolean:
    """A boolean field that takes JSON true and false only."""
    return StrictBoolean(**kwargs)


def _check_event_types(value: list[str]) -> None:
    problems = [problem for pattern in value if (problem := subscription_problem(pattern))]
    if problems:
        raise ValidationError(problems[0])
    if len(value) > MAX_SUBSCRIPTIONS:
        raise ValidationError(f"at most {MAX_SUBSCRIPTIONS} event types or wildcards")


def _check_channels(value: list[str]) -> None:
    problem = channels_problem(value)
    if problem:
        raise ValidationError(problem)


def _channels_field(description: str) -> fields.List:
    return fields.List(
        fields.String(), validate=_check_channels, metadata={"description": description}
    )


def _check_filter(value: str | None) -> None:
    problem = filter_problem(value) if value is not None else None
    if problem:
        raise ValidationError(problem)


def _check_publishable(value: str) -> None:
    problem = publishable_problem(value)
    if problem:
        raise ValidationError(problem)


# A callback's own retry schedule: as long as a receiver could want, short enough to stay sane.
MAX_RETRIES = 30
MAX_RETRY_DELAY_SECONDS = 7 * 86_400
# More would be a catalogue, not a subscription; 100 names or wildcards is plenty.
MAX_SUBSCRIPTIONS = 100
# Deep enough for any real document, shallow enough that no encoder on the way to Postgres, the
# worker or a receiver runs out of stack (Python's JSON encoder recurses).
MAX_JSON_DEPTH = 100


# Text Postgres and HTTP cannot carry: NUL (Postgres refuses it) and lone UTF-16 surrogates (no
# UTF-8 encoding exists for them; JSON's "\ud800" escape decodes to one).
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent, or None: the one check for every string that
    reaches Postgres or a header."""
    found = _UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL (\\u0000) characters"
    return f"must not contain a lone surrogate (\\u{ord(found.group()):04x}), which is not text"


def _unstorable(value: Any) -> str | None:
    """Why ``value`` cannot be stored and sent on, or None. Walked without recursion, since JSON
    input may nest as deep as the decoder allows."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"must not nest deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, str) and (problem := unstorable_text(item)):
            return problem
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
    url = url_field(required=True)
    event_types = fields.List(
        fields.String(),
        validate=[validate.Length(min=1), _check_event_types],
        metadata={
            "description": "What the callback hears: Boomerang's own event types, the types "
            "you publish (`invoice.paid`), and `prefix.*` wildcards (`invoice.*`). By default "
            "job.succeeded and job.failed."
        },
    )
    channels = _channels_field(
        "Hear only events published on one of these channels (at most 10). Empty or left "
        "out: every event of the callback's types, whatever its channels."
    )
    filter = fields.String(
        validate=_check_filter,
        allow_none=True,
        metadata={
            "description": "A CEL expression over the event's `type`, `data`, `channels` and "
            "timestamp`: the callback hears only events it is true for, e.g. `data.amount > "
            '100 && data.currency == "EUR"`. Null: every event of its types.'
        },
    )
    description = fields.String(validate=validate.Length(max=1000), allow_none=True)
    success_status = fields.Integer(
        strict=True, validate=validate.Range(min=100, max=599), allow_none=True
    )
    max_concurrency = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=10_000),
        allow_none=True,
        metadata={
            "description": "Most deliveries in flight to this callback at once, across every "
            "worker and host. Null: `BOOMERANG_CALLBACK_CONCURRENCY`. Under it, the limit is "
            "learned: it halves when the receiver struggles and grows back as it answers."
        },
    )
    rate_limit_per_second = fields.Float(
        validate=validate.Range(min=0.01, max=100_000),
        allow_none=True,
        allow_nan=False,
        metadata={
            "description": "Most deliveries per second to this callback, across every worker "
            "and host; those over it wait for their turn, none is dropped. Null: no rate."
        },
    )
    retry_schedule = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_RETRY_DELAY_SECONDS)),
        validate=validate.Length(max=MAX_RETRIES),
        allow_none=True,
        metadata={
            "description": "Seconds before each retry of a failed delivery to this callback "
            "(at most 30 retries, each at most 7 days; `[]`: never retry). Null: "
            "`BOOMERANG_RETRY_SCHEDULE`."
        },
    )
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
    url = url_field()
    enabled = strict_boolean()


class CallbackSchema(Schema):
    id = fields.UUID()
    url = fields.String()
    event_types = fields.List(fields.String())
    channels = fields.List(fields.String())
    filter = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    success_status = fields.Integer(allow_none=True)
    max_concurrency = fields.Integer(allow_none=True)
    rate_limit_per_second = fields.Float(allow_none=True)
    retry_schedule = fields.List(fields.Integer(), allow_none=True)
    headers = fields.Function(
        lambda callback: masked_headers(callback.headers or {}),
        metadata={"description": "Credentials (Authorization, Cookie, ...) are shown masked."},
    )
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
    callback_url = url_field(allow_none=True)
    redirect_url = url_field(allow_none=True)


class EventTypeCreateSchema(InputSchema):
    name = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "The type's name, like `invoice.paid`."},
    )
    description = fields.String(validate=validate.Length(max=2000), allow_none=True)
    schema = fields.Raw(
        allow_none=True,
        metadata={
            "description": "A JSON Schema (Draft 2020-12) every published event's `data` must "
            "meet; remote `$ref`s are not fetched. Null: any data."
        },
    )


class EventTypeUpdateSchema(InputSchema):
    description = fields.String(validate=validate.Length(max=2000), allow_none=True)
    schema = fields.Raw(allow_none=True)


class EventTypeSchema(Schema):
    name = fields.String()
    description = fields.String()
    schema = fields.Raw(allow_none=True)
    deprecated = fields.Function(lambda event_type: event_type.deprecated_at is not None)
    deprecated_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class EventTypeListSchema(Schema):
    data = fields.List(fields.Nested(EventTypeSchema))


class EventPublishSchema(InputSchema):
    type = fields.String(
        required=True,
        validate=_check_publishable,
        metadata={"description": "Your event's type, like `invoice.paid`."},
    )
    data = fields.Raw(
        required=True,
        allow_none=True,
        metadata={"description": "Any JSON: the envelope's `data`, sent as given."},
    )
    channels = _channels_field(
        "Channels the event is on (at most 10): callbacks listening on channels hear it only "
        "if it carries one of theirs."
    )
    id = fields.String(
        validate=validate.Length(min=1, max=255),
        metadata={
            "description": "Your own id for the event. Publishing it again with the same type "
            "and data answers 200 with the first message and sends nothing more; with other "
            "type or data, 409."
        },
    )
    ordering_key = fields.String(
        validate=[
            validate.Length(min=1, max=255),
            # \Z, not $: $ also matches before a final line break.
            validate.Regexp(r"^[^\x00-\x1f\x7f]*\Z", error="Must not hold control characters."),
        ],
        metadata={
            "description": "Events with the same key reach each callback one at a time, in the "
            "order they were published: a later one waits until the earlier one succeeded or was "
            "given up on (then its body lists it in `preceding_failed`). Different keys go in "
            "parallel. Job events are keyed by their job's id."
        },
    )


class EventBatchSchema(InputSchema):
    events = fields.List(
        fields.Nested(EventPublishSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH),
    )


class PublishedEventSchema(Schema):
    id = fields.Function(
        lambda published: published.message.id,
        metadata={"description": "The message's id."},
    )
    webhook_id = fields.Function(
        lambda published: webhook_id(published.message.id),
        metadata={"description": "The webhook-id header every delivery of it carries."},
    )
    type = fields.Function(lambda published: published.message.event_type)
    channels = fields.Function(lambda published: published.message.channels)
    ordering_key = fields.Function(lambda published: published.message.ordering_key)
    event_id = fields.Function(
        lambda published: published.message.event_id,
        metadata={"description": "Your own id, if you gave one."},
    )
    created_at = fields.Function(lambda published: published.message.created_at.isoformat())
    created = fields.Function(
        lambda published: published.created,
        metadata={"description": "False when this repeated an event id published before."},
    )
    deliveries = fields.Function(
        lambda published: published.deliveries,
        metadata={"description": "How many callbacks it is on its way to."},
    )


class PublishedBatchSchema(Schema):
    data = fields.List(fields.Nested(PublishedEventSchema))


class JobCreateQuerySchema(InputSchema):
    callbackURL = url_field()


class KeyCreateSchema(InputSchema):
    """A new API key takes no fields: any field sent is refused rather than ignored."""


class PortalLinkCreateSchema(InputSchema):
    """``POST /v1/portal/links``: a one-time sign-in URL for one of your people."""

    read_only = fields.Boolean(
        load_default=False,
        metadata={"description": "The session it starts may look at everything, change nothing."},
    )
    expires_in = fields.Integer(
        load_default=600,
        validate=validate.Range(min=1),
        metadata={
            "description": "Seconds the link stays valid before its one use (at most "
            "`BOOMERANG_PORTAL_LINK_MAX_SECONDS`). The session it starts lasts as a sign-in "
            "does."
        },
    )


class PortalLinkSchema(Schema):
    url = fields.String(metadata={"description": "Open it once, before expires_at."})
    read_only = fields.Boolean()
    expires_at = fields.DateTime()


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
    stream_url = fields.String(
        metadata={
            "description": "The job's event stream, with a job-scoped expiring token: "
            "safe to hand to a browser."
        }
    )


MAX_WAIT_SECONDS = 60


class JobWaitQuerySchema(InputSchema):
    wait = fields.Integer(
        validate=validate.Range(min=0, max=MAX_WAIT_SECONDS),
        metadata={"description": "Seconds to wait for a change (long poll), at most 60."},
    )


def _opaque_cursor(value: str) -> None:
    """A page cursor is one this service handed out."""
    try:
        decode_cursor(value)
    except BadCursor as exc:
        raise ValidationError(str(exc)) from None


class JobListQuerySchema(InputSchema):
    status = fields.String(validate=validate.OneOf([status.value for status in JobStatus]))
    type = fields.String()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=_opaque_cursor)


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
    webhook_id = fields.Function(lambda d: webhook_id(d.message_id))
    event_type = fields.Function(lambda d: d.message.event_type)
    job_id = fields.Function(lambda d: str(d.message.job_id) if d.message.job_id else None)
    callback_id = fields.UUID(allow_none=True)
    url = fields.String()
    status = fields.Function(lambda d: d.status.value)
    attempt_count = fields.Integer()
    next_attempt_at = fields.DateTime(
        allow_none=True,
        metadata={"description": "Null while pending: waiting behind an earlier event of its key."},
    )
    ordering_key = fields.String(allow_none=True)
    preceding_failed = fields.Function(
        lambda d: [webhook_id(m) for m in d.preceding_failed] if d.preceding_failed else [],
        metadata={
            "description": "Webhook ids of earlier events of its ordering key that this "
            "callback gave up on since its last success, as its body says."
        },
    )
    last_attempt_at = fields.DateTime(allow_none=True)
    succeeded_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    attempts = fields.List(fields.Nested(DeliveryAttemptSchema))


class DeliveryListSchema(Schema):
    data = fields.List(fields.Nested(DeliverySchema))


WEBHOOK_ID = re.compile(r"msg_[0-9a-f]{32}")


class DeliveryFilterSchema(InputSchema):
    """What picks deliveries out of the log, for a search or a replay: each filter narrows."""

    callback_id = fields.UUID()
    status = fields.String(validate=validate.OneOf([status.value for status in DeliveryStatus]))
    event_type = fields.String(
        metadata={"description": "An event type, or `prefix.*` for every type under it."}
    )
    webhook_id = fields.String(
        metadata={"description": "The `webhook-id` a receiver saw: `msg_` and 32 hex digits."}
    )
    job_id = fields.UUID()
    since = UtcDateTime(metadata={"description": "Created at or after this time."})
    until = UtcDateTime(metadata={"description": "Created before this time."})
    response = fields.String(
        validate=validate.OneOf(list(RESPONSE_CLASSES)),
        metadata={
            "description": "Some attempt was answered with a status of this class; `none`: "
            "some attempt got no answer (a timeout, a refused connection, a blocked address)."
        },
    )

    @validates("event_type")
    def _event_type(self, value: str, **_kwargs: object) -> None:
        problem = subscription_problem(value)
        if problem:
            raise ValidationError(problem)

    @validates("webhook_id")
    def _webhook_id(self, value: str, **_kwargs: object) -> None:
        if not WEBHOOK_ID.fullmatch(value):
            raise ValidationError("not a webhook id: msg_ and 32 lower-case hex digits")

    @validates_schema
    def _a_time_range(self, data: dict[str, Any], **_kwargs: object) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and until <= since:
            raise ValidationError("must be after since", field_name="until")


class DeliverySearchQuerySchema(DeliveryFilterSchema):
    """``GET /v1/deliveries``: every filter narrows; none is required."""

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=_opaque_cursor)


class DeliveryReplayRequestSchema(DeliveryFilterSchema):
    """``POST /v1/deliveries/replay``: the search's filters, over finished deliveries only."""

    status = fields.String(
        validate=validate.OneOf(
            [DeliveryStatus.SUCCEEDED.value, DeliveryStatus.FAILED.value],
            error="a replay re-sends finished deliveries: succeeded or failed (or leave it out "
            "for both)",
        )
    )
    dry_run = fields.Boolean(
        load_default=False,
        metadata={"description": "Only count what would be re-sent; nothing is stored or sent."},
    )


class DeliveryReplaySchema(Schema):
    """A bulk replay, or with ``dry_run`` only the count it would re-send."""

    id = fields.UUID(allow_none=True, metadata={"description": "None for a dry run."})
    status = fields.String(
        metadata={"description": "`running`, `done`, or `dry_run` (nothing was started)."}
    )
    dry_run = fields.Boolean()
    matched = fields.Integer(
        metadata={"description": "Finished deliveries the filter matched when it was asked."}
    )
    replayed = fields.Integer(metadata={"description": "Re-sent so far."})
    filter = fields.Dict(metadata={"description": "The filter, as it was taken."})
    created_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class DeliverySummarySchema(DeliverySchema):
    """A delivery as a search lists it: its attempts are in its own ``GET``."""

    class Meta:
        exclude = ("attempts",)


class DeliveryPageSchema(Schema):
    data = fields.List(fields.Nested(DeliverySummarySchema))
    next_cursor = fields.String(allow_none=True)


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


class TenantSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    redirect_origins = fields.List(
        fields.String(),
        metadata={"description": "Origins a job's redirect_url may point at."},
    )
    cors_origins = fields.List(
        fields.String(),
        metadata={"description": "Origins whose pages may read your streams and long polls."},
    )
    allow_uncatalogued_event_types = fields.Boolean(
        metadata={"description": "Whether types missing from your catalogue may be published."}
    )


class TenantUpdateSchema(InputSchema):
    allow_uncatalogued_event_types = strict_boolean(
        metadata={
            "description": "Whether POST /v1/events may publish a type missing from your "
            "event-type catalogue (default false: such an event is a 422)."
        }
    )
    redirect_origins = fields.List(
        fields.String(validate=validate.Length(min=1, max=300)),
        metadata={
            "description": "Origins (scheme://host[:port], nothing after it) a job's "
            "redirect_url may point at; replaces the list."
        },
    )
    cors_origins = fields.List(
        fields.String(validate=validate.Length(min=1, max=300)),
        metadata={
            "description": "Origins whose web pages may read your job streams and long polls "
            "(CORS); replaces the list."
        },
    )
