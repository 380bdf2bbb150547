"""A small Server-Sent Events reader over requests, bounded in time, for the tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

TERMINAL = frozenset({"job.succeeded", "job.failed"})


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str

    @property
    def payload(self) -> Any:
        return json.loads(self.data)


def parse_events(lines: Iterator[str]) -> Iterator[SseEvent]:
    """The events in a stream's lines, each as soon as its blank line arrives."""
    fields: dict[str, str] = {}
    for raw in lines:
        if raw == "":
            if "data" in fields:
                yield SseEvent(fields.get("id"), fields.get("event", "message"), fields["data"])
            fields = {}
            continue
        if raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        fields[name] = value.removeprefix(" ")


def read_events(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[requests.Response, list[SseEvent]]:
    """Every event until the server closes the stream (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    events: list[SseEvent] = []
    with requests.get(url, headers=headers, stream=True, timeout=(5, timeout)) as response:
        if response.status_code != 200:
            return response, events
        for event in parse_events(response.iter_lines(decode_unicode=True)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream did not end within {timeout} s: {events}")
            events.append(event)
    return response, events


def follow(url: str, *, timeout: float = 60, last_event_id: str | None = None) -> list[SseEvent]:
    """Read a job's stream to its terminal event as a browser's EventSource does: when the
    connection breaks or is refused, connect again with the last id seen in ``Last-Event-ID``."""
    deadline = time.monotonic() + timeout
    events: list[SseEvent] = []
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=(2, 20)) as response:
                if response.status_code == 200:
                    for event in parse_events(response.iter_lines(decode_unicode=True)):
                        if event.event != "job.state":
                            last_event_id = event.id
                        events.append(event)
                        if event.event in TERMINAL:
                            return events
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no terminal event within {timeout} s: {[e.event for e in events]}")
