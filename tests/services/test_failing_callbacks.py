"""A callback that keeps failing is disabled, its tenant is told, and it can be recovered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.models import Callback, Delivery, DeliveryStatus, Message
from app.services import events
from app.services.callbacks import note_attempt_outcome
from tests.factories import make_callback, make_delivery


def reload_callback(db_session, callback_id) -> Callback:
    db_session.expire_all()
    return db_session.get(Callback, callback_id)


def test_failures_build_a_streak_that_a_success_clears(db_session, settings, tenant):
    callback = make_callback(db_session, tenant[0], "http://127.0.0.1:1/hook")
    start = datetime.now(UTC)
    note_attempt_outcome(db_session, callback.id, False, start, settings)
    note_attempt_outcome(db_session, callback.id, False, start + timedelta(minutes=1), settings)
    failing = reload_callback(db_session, callback.id)
    assert failing.consecutive_failures == 2
    assert failing.failing_since == start
    note_attempt_outcome(db_session, callback.id, True, start + timedelta(minutes=2), settings)
    healed = reload_callback(db_session, callback.id)
    assert healed.consecutive_failures == 0
    assert healed.failing_since is None
    assert healed.enabled is True


def test_a_callback_failing_past_the_limit_is_disabled_and_others_are_told(
    db_session, settings, tenant, sent_tasks
):
    owner = tenant[0]
    failing = make_callback(db_session, owner, "http://127.0.0.1:1/failing")
    ops = make_callback(
        db_session, owner, "http://127.0.0.1:1/ops", event_types=["callback.disabled"]
    )
    make_callback(db_session, owner, "http://127.0.0.1:1/jobs-only")
    start = datetime.now(UTC)
    limit = timedelta(seconds=settings.callback_disable_after_seconds)

    note_attempt_outcome(db_session, failing.id, False, start, settings)
    note_attempt_outcome(
        db_session, failing.id, False, start + limit - timedelta(seconds=1), settings
    )
    assert reload_callback(db_session, failing.id).enabled is True

    note_attempt_outcome(db_session, failing.id, False, start + limit, settings)
    disabled = reload_callback(db_session, failing.id)
    assert disabled.enabled is False
    assert "3 failed attempts in a row" in disabled.disabled_reason

    (message,) = db_session.scalars(
        select(Message).where(Message.event_type == events.CALLBACK_DISABLED)
    ).all()
    assert json.loads(message.body)["data"]["callback_id"] == str(failing.id)
    targets = db_session.scalars(
        select(Delivery.callback_id).where(Delivery.message_id == message.id)
    )
    assert list(targets) == [ops.id]


def test_a_disabled_callback_is_not_disabled_again(db_session, settings, tenant):
    owner = tenant[0]
    failing = make_callback(db_session, owner, "http://127.0.0.1:1/failing", enabled=False)
    make_callback(db_session, owner, "http://127.0.0.1:1/ops", event_types=["callback.disabled"])
    start = datetime.now(UTC) - timedelta(days=30)
    failing.failing_since = start
    db_session.flush()
    note_attempt_outcome(db_session, failing.id, False, datetime.now(UTC), settings)
    assert (
        db_session.scalars(
            select(Message).where(Message.event_type == events.CALLBACK_DISABLED)
        ).all()
        == []
    )


def test_enable_turns_a_disabled_callback_back_on(client, auth, db_session, tenant):
    callback = make_callback(
        db_session,
        tenant[0],
        "http://127.0.0.1:1/hook",
        enabled=False,
        consecutive_failures=9,
        failing_since=datetime.now(UTC),
        disabled_reason="failing",
    )
    response = client.post(f"/v1/callbacks/{callback.id}/enable", headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["enabled"] is True
    assert response.get_json()["disabled_reason"] is None
    assert reload_callback(db_session, callback.id).consecutive_failures == 0


def test_recover_resends_failed_deliveries_since_a_time(
    client, auth, db_session, tenant, sent_tasks
):
    owner = tenant[0]
    callback = make_callback(db_session, owner, "http://127.0.0.1:1/hook")
    now = datetime.now(UTC)
    deliveries = []
    for age_hours in (1, 5, 30):
        delivery = make_delivery(db_session, callback, now)
        delivery.status = DeliveryStatus.FAILED
        delivery.created_at = now - timedelta(hours=age_hours)
        deliveries.append(delivery)
    deliveries[1].status = DeliveryStatus.SUCCEEDED
    db_session.commit()
    sent_tasks.clear()

    since = (now - timedelta(hours=10)).isoformat()
    response = client.post(
        f"/v1/callbacks/{callback.id}/recover", query_string={"since": since}, headers=auth
    )

    assert response.status_code == 202, response.get_json()
    assert response.get_json() == {"recovered": 1}
    db_session.expire_all()
    assert db_session.get(Delivery, deliveries[0].id).status == DeliveryStatus.PENDING
    assert db_session.get(Delivery, deliveries[2].id).status == DeliveryStatus.FAILED
    assert [(t.name, t.args) for t in sent_tasks] == [("boomerang.deliver", ())]


def test_recover_needs_a_valid_since(client, auth, db_session, tenant):
    callback = make_callback(db_session, tenant[0], "http://127.0.0.1:1/hook")
    response = client.post(
        f"/v1/callbacks/{callback.id}/recover", query_string={"since": "yday"}, headers=auth
    )
    assert response.status_code == 422
    assert "since" in response.get_json()["errors"]["query"]


def test_recover_and_enable_hide_other_tenants_callbacks(client, other_auth, db_session, tenant):
    callback = make_callback(db_session, tenant[0], "http://127.0.0.1:1/hook")
    assert client.post(f"/v1/callbacks/{callback.id}/enable", headers=other_auth).status_code == 404
    response = client.post(
        f"/v1/callbacks/{callback.id}/recover",
        query_string={"since": "2020-01-01T00:00:00Z"},
        headers=other_auth,
    )
    assert response.status_code == 404
