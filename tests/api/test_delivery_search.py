"""``GET /v1/deliveries``: the tenant's whole delivery log, newest first, narrowed by any filter,
paged by cursor; another tenant's deliveries never show, and a bad filter is a 422 naming it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.events import webhook_id
from app.models import Delivery, DeliveryAttempt, DeliveryStatus
from tests.conftest import error_fields
from tests.factories import make_callback, make_delivery, make_job, make_tenant

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def attempt(session, delivery: Delivery, status: int | None) -> None:
    session.add(
        DeliveryAttempt(
            id=uuid.uuid4(),
            delivery_id=delivery.id,
            attempted_at=delivery.created_at,
            request_headers={},
            response_status=status,
            response_body_truncated=False,
            duration_ms=3,
            succeeded=status is not None and status < 300,
            error=None if status else "connection refused",
        )
    )


@pytest.fixture
def log(db_session, owner):
    """Four deliveries a minute apart, and one of another tenant's."""
    a = make_callback(db_session, owner, "http://127.0.0.1:9/a", event_types=["*"])
    b = make_callback(db_session, owner, "http://127.0.0.1:9/b", event_types=["*"])
    job = make_job(db_session, owner)
    made = {
        "paid": make_delivery(db_session, a, event_type="invoice.paid"),
        "declined": make_delivery(db_session, b, event_type="invoice.declined"),
        "job": make_delivery(db_session, a, job_id=job.id, event_type="job.succeeded"),
        "deleted": make_delivery(db_session, b, event_type="user.deleted"),
    }
    statuses = {
        "paid": DeliveryStatus.SUCCEEDED,
        "declined": DeliveryStatus.FAILED,
        "job": DeliveryStatus.PENDING,
        "deleted": DeliveryStatus.PENDING,
    }
    for minute, (name, delivery) in enumerate(made.items()):
        db_session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(created_at=at(minute), status=statuses[name])
        )
    db_session.flush()
    for delivery in made.values():
        db_session.refresh(delivery)
    attempt(db_session, made["paid"], 200)
    attempt(db_session, made["declined"], 503)
    attempt(db_session, made["declined"], None)
    attempt(db_session, made["job"], 404)

    other = make_tenant(db_session, "globex").row
    theirs = make_callback(db_session, other, "http://127.0.0.1:9/theirs", event_types=["*"])
    make_delivery(db_session, theirs, event_type="invoice.paid")
    db_session.flush()
    return {"a": a, "b": b, "the_job": job, "theirs": theirs, **made}


def search(client, auth, **query) -> dict:
    response = client.get("/v1/deliveries", query_string=query, headers=auth)
    assert response.status_code == 200, response.text
    return response.json


def found(client, auth, log, **query) -> list[str]:
    by_id = {str(d.id): name for name, d in log.items() if isinstance(d, Delivery)}
    return [by_id.get(d["id"], "someone else's") for d in search(client, auth, **query)["data"]]


def test_the_whole_log_newest_first_without_another_tenants(client, auth, log):
    assert found(client, auth, log) == ["deleted", "job", "declined", "paid"]
    page = search(client, auth)
    first = page["data"][0]
    assert first["webhook_id"] == webhook_id(log["deleted"].message_id)
    assert first["event_type"] == "user.deleted" and "attempts" not in first


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "failed"}, ["declined"]),
        ({"status": "pending"}, ["deleted", "job"]),
        ({"event_type": "invoice.paid"}, ["paid"]),
        ({"event_type": "invoice.*"}, ["declined", "paid"]),
        ({"event_type": "job.*"}, ["job"]),
        ({"since": at(1).isoformat()}, ["deleted", "job", "declined"]),
        ({"until": at(2).isoformat()}, ["declined", "paid"]),
        ({"since": at(1).isoformat(), "until": at(3).isoformat()}, ["job", "declined"]),
        ({"response": "2xx"}, ["paid"]),
        ({"response": "4xx"}, ["job"]),
        ({"response": "5xx"}, ["declined"]),
        ({"response": "none"}, ["declined"]),
        ({"response": "3xx"}, []),
        ({"status": "pending", "event_type": "user.*"}, ["deleted"]),
    ],
)
def test_each_filter_narrows(client, auth, log, query, expected):
    assert found(client, auth, log, **query) == expected


def test_by_callback_webhook_id_and_job(client, auth, log):
    assert found(client, auth, log, callback_id=str(log["a"].id)) == ["job", "paid"]
    assert found(client, auth, log, callback_id=str(log["b"].id), response="5xx") == ["declined"]
    by_webhook = webhook_id(log["job"].message_id)
    assert found(client, auth, log, webhook_id=by_webhook) == ["job"]
    assert found(client, auth, log, job_id=str(log["the_job"].id)) == ["job"]
    assert found(client, auth, log, job_id=str(uuid.uuid4())) == []


def test_pages_follow_on_by_cursor(client, auth, log):
    first = search(client, auth, limit=3)
    assert len(first["data"]) == 3 and first["next_cursor"]
    second = search(client, auth, limit=3, cursor=first["next_cursor"])
    assert [d["id"] for d in second["data"]] == [str(log["paid"].id)]
    assert second["next_cursor"] is None
    narrowed = search(client, auth, limit=1, **{"event_type": "invoice.*"})
    rest = search(client, auth, limit=1, cursor=narrowed["next_cursor"], event_type="invoice.*")
    assert [d["id"] for d in narrowed["data"] + rest["data"]] == [
        str(log["declined"].id),
        str(log["paid"].id),
    ]


def test_another_tenants_log_stays_theirs(client, auth, other_auth, log):
    assert found(client, auth, log, callback_id=str(log["theirs"].id)) == []
    assert search(client, other_auth)["data"] == []  # a tenant with nothing sent sees nothing
    mine = webhook_id(log["paid"].message_id)
    assert search(client, other_auth, webhook_id=mine)["data"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"event_type": "Not A Type"}, "event_type"),
        ({"webhook_id": "msg_123"}, "webhook_id"),
        ({"callback_id": "abc"}, "callback_id"),
        ({"job_id": "abc"}, "job_id"),
        ({"since": "yesterday"}, "since"),
        ({"since": at(2).isoformat(), "until": at(1).isoformat()}, "until"),
        ({"response": "6xx"}, "response"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"cursor": "not-ours"}, "cursor"),
    ],
)
def test_a_bad_filter_is_refused_naming_it(client, auth, query, field):
    response = client.get("/v1/deliveries", query_string=query, headers=auth)
    assert response.status_code == 422
    assert field in error_fields(response)
