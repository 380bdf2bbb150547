"""How a call goes over HTTP, the same for the sync and the async client: the request it
becomes and the check of its answer."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from boomerang_client.calls import Call
from boomerang_client.errors import error_for
from boomerang_client.version import __version__


def session_headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "User-Agent": f"boomerang-client-python/{__version__}",
    }


def build_request(
    http: httpx.Client | httpx.AsyncClient,
    call: Call,
    base_url: str,
    headers: Mapping[str, str],
    timeout: float,
) -> httpx.Request:
    return http.build_request(
        call.operation.method,
        base_url + call.path,
        params=call.query,
        json=call.body,
        headers={**headers, **call.headers},
        timeout=httpx.Timeout(timeout, read=timeout + call.holds),
    )


def check(call: Call, response: httpx.Response) -> httpx.Response:
    """The response, if it is a success of the call's operation; else its error, raised. A body
    streamed must have been read first."""
    if response.status_code not in call.operation.success:
        raise error_for(response)
    return response
