"""The portal in a real browser on the real stack: sign in, register a callback with the form, see
a job's delivery arrive with the receiver's answer, retry it, and stay inside one's own tenant;
then the same pages at phone width."""

from __future__ import annotations

import re
import time

import pytest
import requests
from playwright.sync_api import Page, expect
from standardwebhooks.webhooks import Webhook

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# Deliveries go through Celery and the retry schedule: give them time; nothing waits in sleeps.
ARRIVAL_MS = 30_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def api(stack, api_key: str, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {api_key}", **kwargs.pop("headers", {})}
    return requests.request(method, stack.base_url + path, headers=headers, timeout=10, **kwargs)


def submit_job(stack, api_key: str, **input_) -> str:
    response = api(stack, api_key, "POST", "/v1/jobs", json={"type": "echo", "input": input_})
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def acme(stack):
    return stack.create_tenant("acme")


@pytest.fixture(scope="module")
def desktop(browser, stack):
    context = browser.new_context(viewport=DESKTOP, base_url=stack.base_url)
    context.set_default_timeout(10_000)
    yield context
    context.close()


def sign_in(page: Page, api_key: str) -> None:
    page.goto("/portal/")
    expect(page).to_have_url(re.compile(r"/portal/sign-in$"))
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="At a glance")).to_be_visible()


def test_a_tenant_follows_a_job_to_its_delivery_and_retries_it(
    stack, acme, desktop, receiver, artifacts
):
    receiver.answer("/hook", 200, body=b'{"received":"by the portal test"}')
    page = desktop.new_page()

    # 1. Sign in with the API key.
    sign_in(page, acme["api_key"])

    # 2. Register a callback to the local receiver through the form.
    page.get_by_role("link", name="Callbacks").click()
    page.get_by_role("link", name="Register a callback").click()
    page.get_by_label("URL").fill(receiver.url("/hook"))
    expect(page.get_by_label("job.succeeded")).to_be_checked()
    page.get_by_label("Body format").select_option("envelope")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", level=1, name=receiver.url("/hook"))).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Callback registered")
    page.screenshot(path=artifacts / "portal-callback-desktop.png", full_page=True)
    page.get_by_role("button", name="Reveal secret").click()
    secret = page.locator("#secret").inner_text().strip()
    assert secret.startswith("whsec_")

    # 3. A job through the JSON API.
    job_id = submit_job(stack, acme["api_key"], order=17)

    # 4. The delivery shows up with the receiver's answer (the job page refreshes itself).
    page.goto(f"/portal/jobs/{job_id}")
    delivery_link = page.locator("table.deliveries a").first
    expect(delivery_link).to_be_visible(timeout=ARRIVAL_MS)
    expect(page.locator("table.deliveries .badge")).to_have_text("succeeded", timeout=ARRIVAL_MS)
    delivery_link.click()
    expect(page).to_have_url(re.compile(r"/portal/deliveries/[0-9a-f-]{36}$"))
    delivery_url = page.url
    attempt = page.locator("[data-attempt]")
    expect(attempt).to_have_count(1)
    expect(attempt.locator(".response-status")).to_have_text("200")
    expect(attempt.locator(".response-body")).to_have_text('{"received":"by the portal test"}')
    attempt.get_by_text("Request headers").click()
    expect(attempt.locator("pre").first).to_contain_text("webhook-signature: <redacted>")
    (first,) = receiver.received("/hook")
    payload = Webhook(secret).verify(first.body, first.headers)  # the revealed secret signs
    assert payload["data"]["id"] == job_id
    page.screenshot(path=artifacts / "portal-delivery-desktop.png", full_page=True)

    # 5. Retry: a second attempt appears (the page refreshes while the delivery is pending).
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_contain_text("Sending again now.")
    expect(attempt).to_have_count(2, timeout=ARRIVAL_MS)
    expect(page.locator("#delivery-status")).to_have_text("succeeded", timeout=ARRIVAL_MS)
    second = receiver.wait_for(2, "/hook")[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]

    # 6. Another tenant's delivery is a 404 in the browser.
    globex = stack.create_tenant("globex")
    registered = api(
        stack, globex["api_key"], "POST", "/v1/callbacks", json={"url": receiver.url("/globex")}
    )
    assert registered.status_code == 201, registered.text
    their_job = submit_job(stack, globex["api_key"], order=18)
    receiver.wait_for(1, "/globex")
    (theirs,) = api(stack, globex["api_key"], "GET", f"/v1/jobs/{their_job}/deliveries").json()[
        "data"
    ]
    for path in (
        f"/portal/deliveries/{theirs['id']}",
        f"/portal/jobs/{their_job}",
        f"/portal/callbacks/{registered.json()['id']}",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        expect(page.locator("main")).not_to_contain_text("/globex")

    # Our own delivery page still opens: the 404s were about ownership, not the session.
    assert page.goto(delivery_url).status == 200

    # Something to see on the dashboard: a receiver that fails each event once.
    receiver.answer("/flaky", 503, 200, per_message=True, body=b'{"busy":true}')
    flaky = api(
        stack, acme["api_key"], "POST", "/v1/callbacks", json={"url": receiver.url("/flaky")}
    )
    assert flaky.status_code == 201, flaky.text
    flaky_jobs = [submit_job(stack, acme["api_key"], order=100 + n) for n in range(4)]
    for flaky_job in flaky_jobs:
        # A job's page reloads itself until its deliveries are settled.
        page.goto(f"/portal/jobs/{flaky_job}")
        expect(page.locator("table.deliveries .badge")).to_have_count(2, timeout=ARRIVAL_MS)
        expect(page.locator("table.deliveries .badge-pending")).to_have_count(0, timeout=ARRIVAL_MS)
    assert len(receiver.received("/flaky")) == 8

    # 7. The dashboard, as a screenshot.
    page.goto("/portal/")
    card = page.locator("article.health", has_text=receiver.url("/hook"))
    expect(card.locator('[data-figure="success-rate"]')).to_have_text("100.0 %")
    flaky_card = page.locator("article.health", has_text=receiver.url("/flaky"))
    expect(flaky_card.locator('[data-figure="success-rate"]')).to_have_text("50.0 %")
    expect(card.locator("svg.chart")).to_have_count(2)
    page.screenshot(path=artifacts / "portal-dashboard-desktop.png", full_page=True)
    page.close()


MAIN_PAGES = ["/portal/", "/portal/callbacks", "/portal/jobs", "/portal/deliveries"]


def a_job_with_a_delivery(stack, api_key: str, receiver) -> None:
    """A callback, a job and the job's delivery, so each list has a detail page to open."""
    made = api(stack, api_key, "POST", "/v1/callbacks", json={"url": receiver.url("/phone")})
    assert made.status_code == 201, made.text
    job_id = submit_job(stack, api_key, n=1)
    deadline = time.monotonic() + 30
    while not api(stack, api_key, "GET", f"/v1/jobs/{job_id}/deliveries").json()["data"]:
        assert time.monotonic() < deadline, "the job's delivery never appeared"
        time.sleep(0.2)


def test_the_main_pages_fit_a_phone_screen(stack, acme, browser, receiver, artifacts):
    if not api(stack, acme["api_key"], "GET", "/v1/jobs").json()["data"]:
        # This process did not run the module's first test: make what it would have left.
        a_job_with_a_delivery(stack, acme["api_key"], receiver)
    phone = browser.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        base_url=stack.base_url,
        # Layout is the stylesheet's alone; without the script, a page about work in progress
        # does not reload itself in the middle of being measured.
        java_script_enabled=False,
    )
    try:
        page = phone.new_page()
        sign_in(page, acme["api_key"])
        pages = [*MAIN_PAGES, "/portal/callbacks/new"]
        # One detail page of each kind, from what the first test made.
        for listing in ("/portal/callbacks", "/portal/jobs", "/portal/deliveries"):
            page.goto(listing)
            links = page.locator("main table a")
            if links.count():
                pages.append(links.first.get_attribute("href") or listing)
        assert len(pages) == len(MAIN_PAGES) + 4, pages
        for path in pages:
            response = page.goto(path)
            assert response is not None and response.status == 200, path
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at phone width"
            if "/deliveries/" in path:
                page.screenshot(path=artifacts / "portal-delivery-phone.png", full_page=True)
        page.goto("/portal/")
        page.screenshot(path=artifacts / "portal-dashboard-phone.png", full_page=True)
    finally:
        phone.close()


def test_a_tenant_catalogues_a_type_and_subscribes_a_callback_to_it_in_the_browser(
    stack, browser, receiver, artifacts
):
    initech = stack.create_tenant("initech")
    # A browser of its own: the shared one is signed in as another tenant.
    context = browser.new_context(viewport=DESKTOP, base_url=stack.base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    sign_in(page, initech["api_key"])

    # The catalogue: a type with a schema.
    page.get_by_role("link", name="Event types").click()
    expect(page.get_by_text("No event types yet.")).to_be_visible()
    page.get_by_label("Name").fill("invoice.paid")
    page.get_by_label("Description").fill("An invoice was paid in full.")
    page.get_by_label("JSON Schema").fill('{"type": "object", "required": ["amount"]}')
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("status")).to_contain_text("Event type invoice.paid added.")
    expect(page.locator("table code")).to_have_text("invoice.paid")
    # A schema that is not JSON is named, and nothing is saved.
    page.get_by_label("Name").fill("invoice.voided")
    page.get_by_label("JSON Schema").fill("{not json")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#schema-error")).to_contain_text("not JSON")
    page.screenshot(path=artifacts / "portal-event-types-desktop.png", full_page=True)

    # A callback that hears the tenant's own types, by wildcard.
    page.get_by_role("link", name="Callbacks").click()
    page.get_by_role("link", name="Register a callback").click()
    page.get_by_label("URL").fill(receiver.url("/billing"))
    page.get_by_label("job.succeeded").uncheck()
    page.get_by_label("job.failed").uncheck()
    page.get_by_label("Your own event types").fill("invoice.*")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("status")).to_contain_text("Callback registered")
    expect(page.locator("main")).to_contain_text("invoice.*")

    # Published through the API, it arrives; data that fails the schema is refused.
    refused = api(
        stack, initech["api_key"], "POST", "/v1/events", json={"type": "invoice.paid", "data": {}}
    )
    assert refused.status_code == 422
    published = api(
        stack,
        initech["api_key"],
        "POST",
        "/v1/events",
        json={"type": "invoice.paid", "data": {"amount": 12}},
    )
    assert published.status_code == 202, published.text
    (arrived,) = receiver.wait_for(1, "/billing", timeout=ARRIVAL_MS / 1000)
    assert arrived.headers["webhook-id"] == published.json()["webhook_id"]
    context.close()


def link_path(link: dict) -> str:
    """A portal link's path: the browser opens it on the web process directly."""
    return link["url"][link["url"].index("/portal/link/") :]


def test_a_customer_opens_a_portal_link_searches_and_replays_and_the_link_is_spent(
    stack, browser, receiver, artifacts
):
    umbrella = stack.create_tenant("umbrella")
    key = umbrella["api_key"]
    made = api(
        stack,
        key,
        "POST",
        "/v1/callbacks",
        json={"url": receiver.url("/umbrella"), "event_types": ["parcel.*"]},
    )
    assert made.status_code == 201, made.text
    assert api(stack, key, "POST", "/v1/event-types", json={"name": "parcel.sent"}).ok
    published = api(stack, key, "POST", "/v1/events", json={"type": "parcel.sent", "data": {}})
    assert published.status_code == 202, published.text
    receiver.wait_for(1, "/umbrella", timeout=ARRIVAL_MS / 1000)

    # The tenant's backend mints a link; the customer opens it and never sees a key.
    link = api(stack, key, "POST", "/v1/portal/links", json={"expires_in": 300}).json()
    context = browser.new_context(viewport=DESKTOP, base_url=stack.base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(link_path(link))
    expect(page.get_by_role("heading", name="Sign in to umbrella")).to_be_visible()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="At a glance")).to_be_visible()
    expect(page.get_by_role("link", name="API keys")).to_have_count(0)

    # Search by webhook-id, then replay what a type filter matches, after the confirmation.
    page.get_by_role("link", name="Deliveries").click()
    page.get_by_label("webhook-id").fill(published.json()["webhook_id"])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("table.deliveries tbody tr")).to_have_count(1)
    expect(page.locator("table.deliveries .badge")).to_have_text("succeeded", timeout=ARRIVAL_MS)
    page.get_by_label("webhook-id").fill("")
    page.get_by_label("Event type").fill("parcel.*")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#replayable")).to_contain_text("1 finished")
    page.screenshot(path=artifacts / "portal-delivery-search-desktop.png", full_page=True)
    confirmations: list[str] = []
    page.once("dialog", lambda dialog: (confirmations.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Replay 1").click()
    expect(page.get_by_role("status").first).to_contain_text("Replaying 1 deliveries")
    assert "Send again the 1 finished deliveries" in confirmations[0]
    again = receiver.wait_for(2, "/umbrella", timeout=ARRIVAL_MS / 1000)[1]
    assert again.headers["webhook-id"] == published.json()["webhook_id"]

    # The link is spent: opened again, in another browser, it says so.
    other = browser.new_context(base_url=stack.base_url)
    reopened = other.new_page()
    response = reopened.goto(link_path(link))
    assert response is not None and response.status == 410
    expect(reopened.get_by_role("alert")).to_contain_text("already used")
    other.close()
    context.close()


def test_a_key_holder_creates_and_revokes_a_key_and_a_read_only_link_changes_nothing(
    stack, browser, receiver
):
    wayne = stack.create_tenant("wayne")
    context = browser.new_context(viewport=DESKTOP, base_url=stack.base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    sign_in(page, wayne["api_key"])
    page.get_by_role("link", name="API keys").click()
    page.get_by_role("button", name="Create a key").click()
    new_key = page.locator("code.new-key").inner_text().strip()
    assert api(stack, new_key, "GET", "/v1/keys").status_code == 200
    page.goto("/portal/keys")
    row = page.locator("tr", has_text=new_key.partition(".")[0])
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status").first).to_contain_text("is revoked")
    assert api(stack, new_key, "GET", "/v1/keys").status_code == 401

    made = api(stack, wayne["api_key"], "POST", "/v1/callbacks", json={"url": receiver.url("/w")})
    link = api(stack, wayne["api_key"], "POST", "/v1/portal/links", json={"read_only": True}).json()
    viewer = browser.new_context(viewport=DESKTOP, base_url=stack.base_url)
    viewer.set_default_timeout(10_000)
    look = viewer.new_page()
    look.goto(link_path(link))
    look.get_by_role("button", name="Continue").click()
    look.goto(f"/portal/callbacks/{made.json()['id']}")
    expect(look.get_by_text("Signed in read-only")).to_be_visible()
    expect(look.get_by_role("button", name="Disable")).to_be_hidden()
    viewer.close()
    context.close()
