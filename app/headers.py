"""Custom headers a tenant may put on its deliveries: what may be set, what a value may hold, and
which values are credentials to be shown masked."""

from __future__ import annotations

import re

# Headers a tenant may not set: hop-by-hop ones, the ones that frame the request, and ours.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
        # W3C trace context: ours on every attempt while tracing is on (app/tracing.py).
        "traceparent",
        "tracestate",
    }
)
# Anchored with \Z, not $: $ also matches before a final line break, which would let one through.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 9110 field-value: visible characters, spaces and tabs inside, and obs-text (0x80-0xFF); no
# control characters, no DEL, nothing beyond Latin-1 (the bytes on the wire).
HEADER_VALUE = re.compile(
    r"^(?:[\x21-\x7e\x80-\xff](?:[\x20\x21-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?\Z"
)
# Custom headers that carry credentials: shown masked, never in full, once registered.
# (Set-Cookie: a receiver's answer shown in an event may carry its session.)
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
MASKED = "<redacted>"


def masked_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers as they may be shown: credentials masked."""
    return {
        name: MASKED if name.lower() in SENSITIVE_HEADERS else value
        for name, value in headers.items()
    }
