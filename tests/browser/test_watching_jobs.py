"""Watching a job from a browser, in Chromium on the real stack: a page on another origin uses
/static/boomerang.js with a job's stream_url (Server-Sent Events, then the long-poll fallback),
an unlisted origin reads nothing, and the redirect flow's waiting page follows the job live."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.support.processes import free_port

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# A job's end (through Celery and a worker) or a page's error can come well past Playwright's
# 5 s default for assertions on a loaded host (set_default_timeout does not cover them). Only the
# waits for something to happen get it: checks that nothing happened keep the default.
ARRIVAL_MS = 30_000

WATCHER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>watcher</title></head>
<body>
<ol id="steps"></ol>
<p id="result"></p>
<p id="error"></p>
<script src="{front}/static/boomerang.js"></script>
<script>
  const streamUrl = new URLSearchParams(location.search).get("stream");
  Boomerang.watch(streamUrl, {{
    onProgress(progress) {{
      const item = document.createElement("li");
      item.textContent = String(Math.round(progress.percent));
      document.getElementById("steps").appendChild(item);
    }},
    onDone(job) {{
      document.getElementById("result").textContent =
        job.status + " " + JSON.stringify(job.result);
    }},
    onError(error) {{
      document.getElementById("error").textContent = "error: " + error.message;
    }},
  }});
</script>
</body></html>
"""


class Site:
    """Another origin: a local server with one page (the watcher), and a return page."""

    def __init__(self, front: str):
        page = WATCHER_PAGE.format(front=front).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page if self.path.startswith("/watch") else b"<h1>Back on the site</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def site(stack) -> Iterator[Site]:
    site = Site(stack.front_url)
    yield site
    site.close()


@pytest.fixture(scope="module")
def tenant(stack, site) -> dict[str, str]:
    tenant = stack.create_tenant("watchers")
    response = requests.patch(
        f"{stack.front_url}/v1/tenant",
        json={"cors_origins": [site.origin], "redirect_origins": [site.origin]},
        headers={"Authorization": f"Bearer {tenant['api_key']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return tenant


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


def submit(stack, tenant, job_type: str, **fields) -> dict:
    response = requests.post(
        f"{stack.front_url}/v1/jobs",
        json={"type": job_type, **fields},
        headers={"Authorization": f"Bearer {tenant['api_key']}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()


def steps_of(page: Page) -> list[int]:
    return [int(text) for text in page.locator("#steps li").all_inner_texts()]


def test_a_page_on_a_listed_origin_watches_each_step_and_the_result(stack, site, tenant, page):
    requests_seen: list[str] = []
    page.on("request", lambda request: requests_seen.append(request.url))
    job = submit(stack, tenant, "sleep", input={"seconds": 3})

    page.goto(f"{site.origin}/watch?stream={quote(job['stream_url'])}")

    expect(page.locator("#result")).to_have_text(
        'succeeded {"slept_seconds":3}', timeout=ARRIVAL_MS
    )
    steps = steps_of(page)
    assert len(steps) >= 2 and steps == sorted(steps) and steps[-1] == 100, steps
    expect(page.locator("#error")).to_have_text("")
    # pushed, not polled: one stream request for the whole job, and no GET of the job
    about_the_job = [
        url for url in requests_seen if url.startswith(stack.front_url) and job["id"] in url
    ]
    assert about_the_job == [job["stream_url"]], about_the_job


def test_without_eventsource_it_falls_back_to_the_long_poll(stack, site, tenant, page):
    page.add_init_script("delete window.EventSource;")
    requests_seen: list[str] = []
    page.on("request", lambda request: requests_seen.append(request.url))
    job = submit(stack, tenant, "sleep", input={"seconds": 3})

    page.goto(f"{site.origin}/watch?stream={quote(job['stream_url'])}")

    expect(page.locator("#result")).to_have_text(
        'succeeded {"slept_seconds":3}', timeout=ARRIVAL_MS
    )
    assert steps_of(page), "no progress was shown"
    polls = [url for url in requests_seen if f"/stream/v1/jobs/{job['id']}?" in url]
    assert polls and all("wait=30" in url for url in polls)
    assert not [
        url
        for url in requests_seen
        if url.startswith(f"{stack.front_url}/stream/v1/jobs/{job['id']}/events")
    ]


def test_a_page_on_an_unlisted_origin_reads_nothing(stack, tenant, page):
    other = Site(stack.front_url)  # a second site, not in the tenant's cors_origins
    try:
        job = submit(stack, tenant, "echo", input={"n": 1})
        page.goto(f"{other.origin}/watch?stream={quote(job['stream_url'])}")

        expect(page.locator("#error")).to_contain_text("error", timeout=ARRIVAL_MS)
        expect(page.locator("#result")).to_have_text("")
    finally:
        other.close()


def test_the_waiting_page_follows_the_job_live_and_moves_on_when_it_ends(stack, site, tenant, page):
    job = submit(
        stack, tenant, "sleep", input={"seconds": 4}, redirect_url=f"{site.origin}/done?order=7"
    )
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    page.goto(job["redirect_link"])
    expect(page.locator("#progress-text")).to_contain_text("%", timeout=10_000)
    first = page.locator("#progress-text").inner_text()
    expect(page.locator("#progress-text")).not_to_have_text(first, timeout=10_000)
    waiting_loads = [url for url in navigations if "/r/" in url]
    assert len(waiting_loads) == 1, navigations  # live updates, not reloads

    expect(page).to_have_url(
        re.compile(r"/done\?order=7&job_id=.*&status=succeeded"), timeout=ARRIVAL_MS
    )
    expect(page.get_by_role("heading", name="Back on the site")).to_be_visible()
