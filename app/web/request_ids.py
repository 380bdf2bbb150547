"""A request id on every web request: taken from the caller's ``X-Request-Id`` when it is a
sane token, made up otherwise; bound to the request's log lines and returned on every response,
errors included, so a client's report can be matched to our logs."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from app.logs import add_log_context, clear_log_context

HEADER = "X-Request-Id"

# Ids from a proxy or client are echoed into logs and headers: letters, digits and a little
# punctuation only, so one cannot forge log fields or split a header.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


def request_id_from(header: str | None) -> str:
    """The caller's id when it is a sane token, else a fresh one."""
    if header is not None and _SANE.fullmatch(header):
        return header
    return uuid.uuid4().hex


def current_request_id() -> str:
    """This request's id, made now if no hook has made it yet."""
    if "request_id" not in g:
        g.request_id = request_id_from(request.headers.get(HEADER))
    return g.request_id


def init_app(app: Flask) -> None:
    """Bind the id before any other hook runs (so their logs carry it); echo it on the answer."""

    def bind_request_id() -> None:
        clear_log_context()  # whatever a previous request on this thread left behind
        add_log_context(request_id=current_request_id())

    def return_request_id(response: Response) -> Response:
        response.headers[HEADER] = current_request_id()
        return response

    def forget_request_id(_exc: BaseException | None) -> None:
        clear_log_context()

    # First, even if another hook was registered earlier: a hook that fails the request (an
    # oversized body) must not stop the id from being bound for its log lines.
    app.before_request_funcs.setdefault(None, []).insert(0, bind_request_id)
    app.after_request(return_request_id)
    app.teardown_request(forget_request_id)
