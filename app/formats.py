"""Payload formats: how one stored event is put on the wire for one callback.

A callback pins a format and a version of it when it is registered. A released renderer is frozen:
changing what a format sends means adding a new version, so a receiver never finds its parser
broken by an upgrade it did not ask for. Renderers read only what is stored on the message (never
settings or the clock), so every retry sends the same bytes under the same signature.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from app.events import webhook_id
from app.models import Callback, Message

ENVELOPE = "envelope"
CLOUDEVENTS = "cloudevents"
DEFAULT_FORMAT = ENVELOPE


@dataclass(frozen=True)
class Rendered:
    """The exact body to sign and send, and the Content-Type it goes with."""

    body: str
    content_type: str


Renderer = Callable[[Message], Rendered]

# (format, version) -> renderer. A released entry is never changed or removed: callbacks pinned
# to it depend on its exact bytes.
RENDERERS: dict[tuple[str, int], Renderer] = {}


class UnknownFormat(LookupError):
    """No renderer is registered under this format (or this version of it)."""


def _released(format_name: str, version: int) -> Callable[[Renderer], Renderer]:
    def register(renderer: Renderer) -> Renderer:
        RENDERERS[(format_name, version)] = renderer
        return renderer

    return register


@_released(ENVELOPE, 1)
def render_envelope_v1(message: Message) -> Rendered:
    """The Standard Webhooks envelope ``{"type","timestamp","data"}``, exactly as stored."""
    return Rendered(message.body, "application/json")


@_released(CLOUDEVENTS, 1)
def render_cloudevents_v1(message: Message) -> Rendered:
    """A CloudEvents 1.0 event in structured mode (the JSON event format).

    ``id`` is the webhook id, so a retry is recognisably the same event; ``source`` names the
    tenant (fixed, not configurable, so a retry after a configuration change still carries the
    same bytes); ``type`` is the event type as subscribed to; ``time`` the envelope's timestamp;
    ``subject`` the job's id for job events.
    """
    envelope = json.loads(message.body)
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": webhook_id(message.id),
        "source": f"/boomerang/tenants/{message.tenant_id}",
        "type": message.event_type,
    }
    if message.job_id is not None:
        event["subject"] = str(message.job_id)
    event["time"] = envelope["timestamp"]
    event["datacontenttype"] = "application/json"
    event["data"] = envelope["data"]
    return Rendered(json.dumps(event, separators=(",", ":")), "application/cloudevents+json")


def after_failed(rendered: Rendered, webhook_ids: list[str]) -> Rendered:
    """The same event, saying which earlier events of its ordering key its receiver will not get
    (they were given up on): ``preceding_failed``, a list of webhook ids, in the envelope; the
    ``precedingfailed`` extension attribute (space-separated, as CloudEvents allows only simple
    values) in a CloudEvent. Spliced onto the rendered bytes, which stay as they were."""
    said: dict[str, object] = (
        {"precedingfailed": " ".join(webhook_ids)}
        if rendered.content_type == "application/cloudevents+json"
        else {"preceding_failed": webhook_ids}
    )
    field = json.dumps(said, separators=(",", ":"))[1:-1]
    body = rendered.body.rstrip()
    return Rendered(f"{body[:-1]},{field}}}", rendered.content_type)


def format_names() -> tuple[str, ...]:
    """Every format a callback may choose, in the order they were added."""
    return tuple(dict.fromkeys(name for name, _ in RENDERERS))


def versions_of(format_name: str) -> list[int]:
    """The released versions of a format, oldest first; empty for an unknown format."""
    return sorted(version for name, version in RENDERERS if name == format_name)


def renderer_for(format_name: str, version: int) -> Renderer:
    """The renderer registered for exactly this format and version."""
    try:
        return RENDERERS[(format_name, version)]
    except KeyError:
        raise UnknownFormat(f"no version {version} of format {format_name!r}") from None


def render_for(callback: Callback | None, message: Message) -> Rendered:
    """What to send ``message`` as to ``callback``: its pinned format; an ad-hoc URL (no
    callback) gets the envelope, version 1."""
    if callback is None:
        return render_envelope_v1(message)
    return renderer_for(callback.format, callback.format_version)(message)
