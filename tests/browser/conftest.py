"""Browser tests: Debian's Chromium driven by Playwright against the real stack (gunicorn with two
workers, the Celery workers, beat, Postgres, a private Redis) and the real local receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.settings import database_name, worker_number
from tests.support.stack import QUICK_ENV, Stack, running_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "artifacts"

BROWSER_ENV = {**QUICK_ENV, "BOOMERANG_LOG_FORMAT": "text"}


@pytest.fixture(scope="module")
def stack(worker_id, tmp_path_factory) -> Iterator[Stack]:
    """The whole service on its own database and Redis. No BOOMERANG_SECRET_KEY: the web workers
    must agree on the session key kept in Postgres, as on a fresh machine."""
    database = database_name("browser", worker_number(worker_id))
    log_dir = tmp_path_factory.mktemp("browser-stack")
    with running_stack(database, log_dir, BROWSER_ENV) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser():
    """Chromium as installed by the system (never downloaded)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; install it with `apt-get install -y chromium`"
        if os.environ.get("REQUIRE_BROWSER_TESTS"):  # .ci/run: a skip would hide the tests
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Where screenshots go (ignored by git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
