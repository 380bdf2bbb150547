"""/docs in a real browser: Swagger UI draws every operation from files on our own origin, under a
Content-Security-Policy that refuses inline script, and the browser reports no violation."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_swagger_ui_renders_the_api_from_this_origin_under_its_policy(browser, stack):
    context = browser.new_context(base_url=stack.base_url)
    page = context.new_page()
    origins: set[str] = set()
    problems: list[str] = []
    page.on("request", lambda request: origins.add(urlsplit(request.url).netloc))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    try:
        page.goto("/docs")
        # The spec was fetched and drawn: an operation of each tag is on the page.
        expect(page.get_by_text("/v1/jobs", exact=True).first).to_be_visible(timeout=15_000)
        expect(page.get_by_text("/v1/callbacks", exact=True).first).to_be_visible()
    finally:
        context.close()

    assert origins == {urlsplit(stack.base_url).netloc}
    assert not [p for p in problems if "Content Security Policy" in p], problems
