"""The delivery pages: the list, every attempt's request and response, and Retry."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from app.models import Delivery, DeliveryStatus
from app.services import callbacks as callbacks_service
from app.services import outbox
from tests.factories import make_callback, make_delivery
from tests.portal.conftest import add_attempt


def failed_delivery(db_session, tenant, url="http://127.0.0.1:9/hook"):
    callback = make_callback(db_session, tenant, url)
    delivery = make_delivery(db_session, callback)
    delivery.status = DeliveryStatus.FAILED
    add_attempt(
        db_session,
        delivery,
        status=503,
        succeeded=False,
        body="<b>down for maintenance</b>",
        duration_ms=1234,
        at=datetime.now(UTC) - timedelta(minutes=1),
    )
    return callback, delivery


def test_a_delivery_page_shows_every_attempts_request_and_response(signed_in, db_session, tenant):
    _, delivery = failed_delivery(db_session, tenant.row)
    add_attempt(
        db_session,
        delivery,
        status=None,
        succeeded=False,
        body=None,
        duration_ms=7,
        error="connection refused",
    )

    page = signed_in.text(f"/portal/deliveries/{delivery.id}")

    assert "(2)" in page
    assert "webhook-signature: &lt;redacted&gt;" in page
    assert f"webhook-id: msg_{delivery.message_id.hex}" in page
    assert '<span class="response-status">503</span>' in page
    assert "X-Receiver: tests" in page
    assert "&lt;b&gt;down for maintenance&lt;/b&gt;" in page
    assert "1234 ms" in page
    assert "connection refused" in page and "no response" in page
    # Newest attempt first.
    assert page.index("connection refused") < page.index("down for maintenance")


def test_retry_sends_a_failed_delivery_again(signed_in, db_session, tenant, sent_tasks, settings):
    _, delivery = failed_delivery(db_session, tenant.row)
    db_session.commit()
    sent_tasks.clear()

    response = signed_in.post(f"/portal/deliveries/{delivery.id}/retry")

    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/portal/deliveries/{delivery.id}")
    db_session.expire_all()
    stored = db_session.get(Delivery, delivery.id)
    assert stored.status == DeliveryStatus.PENDING
    assert stored.attempt_count == len(settings.retry_schedule)
    assert [t.name for t in sent_tasks] == ["boomerang.deliver"]
    page = signed_in.text(f"/portal/deliveries/{delivery.id}")
    assert "Sending again now." in page
    assert 'data-refresh-seconds="2"' in page


def test_retry_of_a_delivery_whose_callback_was_deleted_is_refused(
    signed_in, db_session, tenant, sent_tasks
):
    callback, delivery = failed_delivery(db_session, tenant.row)
    callbacks_service.delete_callback(db_session, tenant.row, callback.id)
    db_session.commit()
    sent_tasks.clear()

    response = signed_in.post(f"/portal/deliveries/{delivery.id}/retry")

    assert response.status_code == 303
    assert "cannot be sent again" in signed_in.text(f"/portal/deliveries/{delivery.id}")
    db_session.expire_all()
    assert db_session.get(Delivery, delivery.id).status == DeliveryStatus.FAILED
    assert sent_tasks == []


def test_the_list_filters_by_status_and_callback(signed_in, db_session, tenant):
    _, failed = failed_delivery(db_session, tenant.row, "http://127.0.0.1:9/a")
    other = make_callback(db_session, tenant.row, "http://127.0.0.1:9/b")
    pending = make_delivery(db_session, other)

    links = re.compile(r'href="/portal/deliveries/([0-9a-f-]{36})"')
    every = links.findall(signed_in.text("/portal/deliveries"))
    only_failed = links.findall(signed_in.text("/portal/deliveries?status=failed"))
    only_b = links.findall(signed_in.text(f"/portal/deliveries?callback={other.id}"))

    assert set(every) == {str(failed.id), str(pending.id)}
    assert only_failed == [str(failed.id)]
    assert only_b == [str(pending.id)]


def test_the_list_pages_on(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    made = [make_delivery(db_session, callback) for _ in range(55)]

    first = signed_in.text("/portal/deliveries")
    cursor = re.search(r'cursor=([^"&]+)" rel="next"', first)
    assert cursor
    second = signed_in.text(f"/portal/deliveries?cursor={cursor.group(1)}")

    links = re.compile(r'href="/portal/deliveries/([0-9a-f-]{36})"')
    assert sorted(links.findall(first) + links.findall(second)) == sorted(str(d.id) for d in made)


def test_a_bad_filter_is_a_422_page_naming_it(signed_in):
    response = signed_in.client.get("/portal/deliveries?status=lost&webhook_id=nope")

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="status_error"' in page
    assert 'id="webhook_id_error"' in page
    assert 'value="nope"' in page  # what was typed stays, to be corrected


def test_a_delivery_waiting_behind_its_key_says_so(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    made = [
        outbox.publish(
            db_session,
            tenant_id=tenant.row.id,
            event_type="invoice.paid",
            data={"n": n},
            now=datetime.now(UTC),
            callbacks=[callback],
            ordering_key="cust-7",
        )[0]
        for n in range(2)
    ]
    first = db_session.get_one(Delivery, made[0].id)
    first.status = DeliveryStatus.FAILED
    waiting = db_session.get_one(Delivery, made[1].id)
    waiting.preceding_failed = [first.message_id]
    db_session.commit()

    page = signed_in.text(f"/portal/deliveries/{waiting.id}")

    assert "<code>cust-7</code>" in page
    assert "after the earlier events of its ordering key" in page
    assert f"msg_{first.message_id.hex}" in page
