"""A small Server-Sent Events reader over requests, bounded in time, for the tests."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str

    @property
    def payload(self) -> Any:
        return json.loads(self.data)


def read_events(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[requests.Response, list[SseEvent]]:
    """Every event until the server closes the stream (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    events: list[SseEvent] = []
    with requests.get(url, headers=headers, stream=True, timeout=(5, timeout)) as response:
        if response.status_code != 200:
            return response, events
        fields: dict[str, str] = {}
        for raw in response.iter_lines(decode_unicode=True):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream did not end within {timeout} s: {events}")
            if raw == "":
                if "data" in fields:
                    events.append(
                        SseEvent(fields.get("id"), fields.get("event", "message"), fields["data"])
                    )
                fields = {}
                continue
            if raw.startswith(":"):
                continue
            name, _, value = raw.partition(":")
            fields[name] = value.removeprefix(" ")
    return response, events
