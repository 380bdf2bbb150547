"""The callback pages: register, edit, enable and disable, secrets, test events, recovery. Each
form goes through the API's schema and service, so it refuses what the API refuses."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import create_app
from app.events import CALLBACK_TEST
from app.models import Callback, Delivery, DeliveryStatus, Message
from tests.factories import make_callback, make_delivery, make_tenant
from tests.portal.conftest import Portal


def stored_callbacks(db_session) -> list[Callback]:
    db_session.expire_all()
    return list(db_session.scalars(select(Callback)))


def register(portal: Portal, **fields):
    data = {"event_types": ["job.succeeded", "job.failed"], "format": "envelope", **fields}
    return portal.post("/portal/callbacks/new", data, page="/portal/callbacks/new")


def test_it_registers_a_callback_through_the_form(signed_in, db_session, receiver, tenant):
    response = register(
        signed_in,
        url=receiver.url("/hook"),
        event_types=["job.succeeded", "job.progress"],
        description="orders",
        success_status="201",
        headers="X-Team: payments\n\nAuthorization: Bearer abc",
    )

    assert response.status_code == 303
    (callback,) = stored_callbacks(db_session)
    assert response.headers["Location"].endswith(f"/portal/callbacks/{callback.id}")
    assert callback.tenant_id == tenant.row.id
    assert callback.url == receiver.url("/hook")
    assert callback.event_types == ["job.succeeded", "job.progress"]
    assert callback.description == "orders"
    assert callback.success_status == 201
    assert callback.headers == {"X-Team": "payments", "Authorization": "Bearer abc"}
    assert (callback.format, callback.format_version) == ("envelope", 1)
    assert callback.enabled
    page = signed_in.text(f"/portal/callbacks/{callback.id}")
    assert "Callback registered" in page
    assert receiver.url("/hook") in signed_in.text("/portal/callbacks")


def test_the_new_callback_form_offers_every_format_and_the_default_events(signed_in):
    page = signed_in.text("/portal/callbacks/new")

    assert '<option value="envelope" selected>' in page
    assert '<option value="cloudevents" >' in page
    assert 'value="job.succeeded"\n      checked' in page
    assert 'value="job.progress"\n      >' in page


def test_it_registers_a_cloudevents_callback(signed_in, db_session, receiver):
    register(signed_in, url=receiver.url("/ce"), format="cloudevents")

    (callback,) = stored_callbacks(db_session)
    assert (callback.format, callback.format_version) == ("cloudevents", 1)


def test_it_refuses_what_the_url_guard_refuses(settings, db_session, tenant):
    strict = create_app(
        settings.replace(allow_private_networks=False), session_factory=lambda: db_session
    )
    db_session.commit()
    portal = Portal(strict.test_client())
    portal.sign_in(tenant.api_key)

    response = register(portal, url="http://169.254.169.254/latest/meta-data")

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Nothing was saved" in page
    assert 'aria-describedby="url-error"' in page
    assert "http://169.254.169.254/latest/meta-data" in page  # kept in the form to correct
    assert stored_callbacks(db_session) == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": "ftp://example.com/hook"}, "url", "Not a valid URL"),
        ({"url": ""}, "url", "Not a valid URL"),
        ({"event_types": []}, "event_types", "Shorter than minimum length 1"),
        ({"event_types": ["job.exploded"]}, "event_types", "unknown event type"),
        ({"format": "xml"}, "format", "Must be one of"),
        ({"success_status": "99"}, "success_status", "greater than or equal to 100"),
        ({"success_status": "ok"}, "success_status", "Not a valid integer"),
        ({"headers": "Host: evil.example"}, "headers", "cannot be set on a callback"),
        ({"headers": "webhook-id: x"}, "headers", "cannot be set on a callback"),
        ({"headers": "no colon here"}, "headers", "is not &#39;Name: value&#39;"),
        ({"description": "nul\x00byte"}, "description", "NUL"),
    ],
)
def test_it_refuses_what_the_api_refuses_naming_the_field(
    signed_in, db_session, receiver, fields, field, message
):
    response = register(signed_in, **{"url": receiver.url("/hook"), **fields})

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f'id="{field}-error"' in page
    assert message in page
    assert stored_callbacks(db_session) == []


def test_it_edits_the_url_events_format_and_clears_optional_fields(
    signed_in, db_session, tenant, receiver
):
    callback = make_callback(
        db_session,
        tenant.row,
        receiver.url("/old"),
        description="old",
        success_status=201,
        headers={"X-Old": "1"},
    )
    form = signed_in.text(f"/portal/callbacks/{callback.id}/edit")
    assert receiver.url("/old") in form and "X-Old: 1" in form

    response = signed_in.post(
        f"/portal/callbacks/{callback.id}/edit",
        {
            "url": receiver.url("/new"),
            "event_types": ["job.failed"],
            "format": "cloudevents",
            "description": "",
            "success_status": "",
            "headers": "",
        },
    )

    assert response.status_code == 303
    (saved,) = stored_callbacks(db_session)
    assert saved.url == receiver.url("/new")
    assert saved.event_types == ["job.failed"]
    assert (saved.format, saved.format_version) == ("cloudevents", 1)
    assert (saved.description, saved.success_status, saved.headers) == (None, None, {})
    assert saved.secret == callback.secret


def test_the_form_takes_your_own_event_types_and_wildcards_and_keeps_them_on_edit(
    signed_in, db_session, receiver
):
    response = register(
        signed_in,
        url=receiver.url("/billing"),
        event_types=["job.failed"],
        other_event_types="invoice.paid,  user.*\norder.placed",
        channels="eu, tenant:42",
        retry_schedule="10, 60 600",
        filter="data.amount > 100",
    )
    assert response.status_code == 303
    (callback,) = stored_callbacks(db_session)
    assert callback.event_types == ["job.failed", "invoice.paid", "user.*", "order.placed"]
    assert callback.channels == ["eu", "tenant:42"]
    assert callback.retry_schedule == [10, 60, 600]
    assert callback.filter == "data.amount > 100"

    form = signed_in.text(f"/portal/callbacks/{callback.id}/edit")
    assert 'value="invoice.paid, user.*, order.placed"' in form
    assert 'value="eu, tenant:42"' in form
    assert 'value="10, 60, 600"' in form
    assert 'value="job.failed"\n      checked' in form
    refused = register(signed_in, url=receiver.url("/x"), other_event_types="Invoice Paid")
    assert refused.status_code == 422
    assert 'id="event_types-error"' in refused.get_data(as_text=True)
    bad_filter = register(signed_in, url=receiver.url("/y"), filter="data.amount >")
    assert bad_filter.status_code == 422
    assert 'id="filter-error"' in bad_filter.get_data(as_text=True)


def test_an_edit_the_api_would_refuse_changes_nothing(settings, db_session, tenant):
    strict = create_app(
        settings.replace(allow_private_networks=False), session_factory=lambda: db_session
    )
    callback = make_callback(db_session, tenant.row, "https://example.com/hook")
    db_session.commit()
    portal = Portal(strict.test_client())
    portal.sign_in(tenant.api_key)

    response = portal.post(
        f"/portal/callbacks/{callback.id}/edit",
        {"url": "http://127.0.0.1/admin", "event_types": ["job.failed"], "format": "cloudevents"},
    )

    assert response.status_code == 422
    (saved,) = stored_callbacks(db_session)
    assert saved.url == "https://example.com/hook"
    assert saved.event_types == ["job.succeeded", "job.failed"]
    assert saved.format == "envelope"


def test_it_disables_and_enables_a_callback(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")

    signed_in.post(f"/portal/callbacks/{callback.id}/disable")
    (saved,) = stored_callbacks(db_session)
    assert not saved.enabled
    assert saved.disabled_reason == "disabled by the tenant"
    assert "Disabled: disabled by the tenant" in signed_in.text(f"/portal/callbacks/{callback.id}")

    signed_in.post(f"/portal/callbacks/{callback.id}/enable")
    (saved,) = stored_callbacks(db_session)
    assert saved.enabled and saved.disabled_reason is None


def test_the_secret_is_hidden_until_revealed_on_purpose(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")

    page = signed_in.text(f"/portal/callbacks/{callback.id}")
    assert callback.secret not in page
    assert "Reveal secret" in page

    response = signed_in.post(f"/portal/callbacks/{callback.id}/secret")

    assert response.status_code == 200
    assert callback.secret in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"


def test_rotating_shows_both_secrets_while_the_old_one_still_signs(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    old = callback.secret

    response = signed_in.post(f"/portal/callbacks/{callback.id}/rotate-secret")

    assert response.status_code == 303
    (saved,) = stored_callbacks(db_session)
    assert saved.secret != old and saved.previous_secret == old
    page = signed_in.text(f"/portal/callbacks/{callback.id}")
    assert "Secret rotated" in page
    assert old not in page and saved.secret not in page
    revealed = signed_in.post(f"/portal/callbacks/{callback.id}/secret").get_data(as_text=True)
    assert saved.secret in revealed and old in revealed


def test_it_sends_a_test_event_and_shows_its_delivery(signed_in, db_session, tenant, sent_tasks):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    sent_tasks.clear()

    response = signed_in.post(f"/portal/callbacks/{callback.id}/test")

    assert response.status_code == 303
    delivery = db_session.scalar(select(Delivery).where(Delivery.callback_id == callback.id))
    assert response.headers["Location"].endswith(f"/portal/deliveries/{delivery.id}")
    assert db_session.get(Message, delivery.message_id).event_type == CALLBACK_TEST
    assert [t.name for t in sent_tasks] == ["boomerang.deliver"]
    assert "Test event queued" in signed_in.text(f"/portal/deliveries/{delivery.id}")


def test_it_recovers_failed_deliveries_since_a_moment(signed_in, db_session, tenant, sent_tasks):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    failed = make_delivery(db_session, callback)
    failed.status = DeliveryStatus.FAILED
    db_session.commit()
    sent_tasks.clear()

    response = signed_in.post(
        f"/portal/callbacks/{callback.id}/recover", {"since": "2000-01-01T00:00"}
    )

    assert response.status_code == 303
    db_session.expire_all()
    assert db_session.get(Delivery, failed.id).status == DeliveryStatus.PENDING
    assert [t.name for t in sent_tasks] == ["boomerang.deliver"]
    assert "1 failed delivery queued" in signed_in.text(f"/portal/callbacks/{callback.id}")


def test_a_recovery_without_a_valid_moment_is_refused(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")

    response = signed_in.post(f"/portal/callbacks/{callback.id}/recover", {"since": "yesterday"})

    assert response.status_code == 422
    assert 'id="since-error"' in response.get_data(as_text=True)


def test_the_form_refuses_a_control_character_in_a_header_value(signed_in, db_session):
    response = register(signed_in, url="http://127.0.0.1:9/hook", headers="X-Token: a\x01b")
    assert response.status_code == 422
    assert "not a valid header value" in response.get_data(as_text=True)
    assert stored_callbacks(db_session) == []


def test_the_pages_show_credentials_masked_and_an_edit_keeps_them(signed_in, db_session, tenant):
    callback = make_callback(
        db_session,
        tenant.row,
        "http://127.0.0.1:9/hook",
        headers={"Authorization": "Bearer s3cret", "X-Team": "payments"},
    )
    page = signed_in.text(f"/portal/callbacks/{callback.id}")
    form = signed_in.text(f"/portal/callbacks/{callback.id}/edit")
    assert "s3cret" not in page and "s3cret" not in form
    assert "&lt;redacted&gt;" in form
    response = signed_in.post(
        f"/portal/callbacks/{callback.id}/edit",
        {
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["job.succeeded"],
            "format": "envelope",
            "headers": "Authorization: <redacted>\nX-Team: billing",
        },
        page=f"/portal/callbacks/{callback.id}/edit",
    )
    assert response.status_code == 303
    (stored,) = stored_callbacks(db_session)
    assert stored.headers == {"Authorization": "Bearer s3cret", "X-Team": "billing"}


def test_it_deletes_a_callback_cancelling_what_waited_and_keeping_the_log(
    signed_in, db_session, tenant
):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    waiting = make_delivery(db_session, callback)
    page = signed_in.text(f"/portal/callbacks/{callback.id}")
    assert f'action="/portal/callbacks/{callback.id}/delete"' in page
    assert 'data-confirm="Delete this callback?' in page

    response = signed_in.post(f"/portal/callbacks/{callback.id}/delete")
    assert response.status_code == 303 and response.headers["Location"].endswith(
        "/portal/callbacks"
    )
    assert stored_callbacks(db_session) == []
    db_session.expire_all()
    kept = db_session.get_one(Delivery, waiting.id)
    assert kept.status == DeliveryStatus.CANCELLED and kept.next_attempt_at is None
    assert "http://127.0.0.1:9/hook deleted" in signed_in.text("/portal/callbacks")
    assert signed_in.post(f"/portal/callbacks/{callback.id}/delete").status_code == 404


def test_another_tenants_callback_cannot_be_deleted(signed_in, db_session):
    theirs = make_callback(
        db_session, make_tenant(db_session, "globex").row, "http://127.0.0.1:9/x"
    )
    assert signed_in.post(f"/portal/callbacks/{theirs.id}/delete").status_code == 404
    db_session.expire_all()
    assert db_session.get(Callback, theirs.id) is not None
