"""Payload formats: frozen renderers, pinned per callback, the same bytes on every retry."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from app import formats
from app.events import render_body
from app.formats import Rendered, UnknownFormat, render_for
from app.models import Callback, Message

MESSAGE_ID = uuid.UUID("0193f2d4-7c1e-7a35-9b6e-2f1c8d4e5a60")
TENANT_ID = uuid.UUID("5b0c7c1e-2a9f-4e57-8d3b-6f1e2c3a4b5d")
JOB_ID = uuid.UUID("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
RAISED_AT = datetime(2026, 11, 29, 3, 48, 31, 123456, tzinfo=UTC)
DATA = {"id": str(JOB_ID), "status": "succeeded", "result": {"text": "café ✓", "ratio": 0.1}}


def job_message(job_id: uuid.UUID | None = JOB_ID, data: object = DATA) -> Message:
    """A message as the outbox stores it, with fixed ids and time."""
    return Message(
        id=MESSAGE_ID,
        tenant_id=TENANT_ID,
        job_id=job_id,
        event_type="job.succeeded",
        body=render_body("job.succeeded", data, RAISED_AT),
    )


def pinned(format_name: str, version: int) -> Callback:
    return Callback(format=format_name, format_version=version)


# Every released (format, version) and the exact bytes it sends for ``job_message()``. A renderer
# that changes these bytes breaks every receiver pinned to it: release a new version instead.
GOLDEN = {
    ("envelope", 1): Rendered(
        '{"type":"job.succeeded","timestamp":"2026-11-29T03:48:31.123456+00:00",'
        '"data":{"id":"9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a","status":"succeeded",'
        '"result":{"text":"caf\\u00e9 \\u2713","ratio":0.1}}}',
        "application/json",
    ),
    ("cloudevents", 1): Rendered(
        '{"specversion":"1.0","id":"msg_0193f2d47c1e7a359b6e2f1c8d4e5a60",'
        '"source":"/boomerang/tenants/5b0c7c1e-2a9f-4e57-8d3b-6f1e2c3a4b5d",'
        '"type":"job.succeeded","subject":"9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",'
        '"time":"2026-11-29T03:48:31.123456+00:00","datacontenttype":"application/json",'
        '"data":{"id":"9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a","status":"succeeded",'
        '"result":{"text":"caf\\u00e9 \\u2713","ratio":0.1}}}',
        "application/cloudevents+json",
    ),
}


@pytest.mark.parametrize("release", sorted(GOLDEN))
def test_each_released_version_renders_its_golden_bytes(release):
    assert render_for(pinned(*release), job_message()) == GOLDEN[release]


def test_every_released_version_has_golden_bytes():
    assert set(formats.RENDERERS) == set(GOLDEN)


@pytest.mark.parametrize("release", sorted(GOLDEN))
def test_rendering_the_same_message_again_gives_the_same_bytes(release):
    first = render_for(pinned(*release), job_message())
    again = render_for(pinned(*release), job_message())
    assert first == again


def test_envelope_v1_sends_the_stored_body_unchanged():
    message = job_message()
    message.body = '{"type":"job.succeeded", "timestamp":"x","data":{"b":1,"a":2}}'
    assert render_for(pinned("envelope", 1), message) == Rendered(message.body, "application/json")


def test_an_adhoc_url_gets_the_envelope_v1():
    message = job_message()
    assert render_for(None, message) == Rendered(message.body, "application/json")


def test_a_cloudevent_parses_with_the_official_sdk():
    rendered = render_for(pinned("cloudevents", 1), job_message())
    event = from_http_event(
        HTTPMessage({"content-type": rendered.content_type}, rendered.body.encode())
    )
    assert event.get_specversion() == "1.0"
    assert event.get_id() == f"msg_{MESSAGE_ID.hex}"
    assert event.get_source() == f"/boomerang/tenants/{TENANT_ID}"
    assert event.get_type() == "job.succeeded"
    assert event.get_subject() == str(JOB_ID)
    assert event.get_time() == RAISED_AT
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == DATA


def test_a_cloudevent_carries_the_envelopes_data_byte_for_byte():
    data = {"z": [1, 2.5, 1e-07, 12345678901234567890], "a": {"nested": None, "t": "\u2028"}}
    message = job_message(data=data)
    rendered = render_for(pinned("cloudevents", 1), message)
    envelope_data = message.body[message.body.index('"data":') : -1]
    assert rendered.body.endswith(envelope_data + "}")


def test_an_event_without_a_job_has_no_subject():
    rendered = render_for(pinned("cloudevents", 1), job_message(job_id=None))
    assert "subject" not in json.loads(rendered.body)


def test_a_callback_keeps_its_pinned_version_when_a_new_one_is_released(monkeypatch):
    def cloudevents_v2(message: Message) -> Rendered:
        return Rendered("v2", "application/cloudevents+json")

    monkeypatch.setitem(formats.RENDERERS, ("cloudevents", 2), cloudevents_v2)

    assert formats.versions_of("cloudevents")[-1] == 2
    assert render_for(pinned("cloudevents", 1), job_message()) == GOLDEN[("cloudevents", 1)]
    assert render_for(pinned("cloudevents", 2), job_message()).body == "v2"


def test_a_version_that_was_never_released_is_refused():
    with pytest.raises(UnknownFormat, match="no version 9 of format 'cloudevents'"):
        render_for(pinned("cloudevents", 9), job_message())
    assert formats.versions_of("xml") == []


def test_the_formats_on_offer_are_the_envelope_and_cloudevents():
    assert formats.format_names() == ("envelope", "cloudevents")
    assert formats.versions_of("envelope") == [1]
    assert formats.versions_of("cloudevents") == [1]
