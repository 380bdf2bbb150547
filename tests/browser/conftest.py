"""Browser tests: Debian's Chromium driven by Playwright against the real stack (gunicorn with two
workers, the Celery workers, beat, Postgres, a private Redis) and the real local receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DATABASE_PREFIX, make_settings, recreate_database, worker_number
from tests.e2e.stack import QUICK_ENV, REPO, RedisServer, Stack

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
    number = worker_number(worker_id)
    database = f"{DATABASE_PREFIX}_browser_{number}"
    recreate_database(make_settings(database, 0, **BROWSER_ENV))
    log_dir = tmp_path_factory.mktemp("browser-stack")
    redis_server = RedisServer(log_dir)
    redis_server.start()
    env = {
        **BROWSER_ENV,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": redis_server.url,
    }
    stack = Stack(env=env, log_dir=log_dir)
    stack.env["BOOMERANG_PUBLIC_URL"] = stack.base_url
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        redis_server.stop()


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
