"""``POST /v1/deliveries/replay``: re-send every finished delivery a filter matches, in batches
in the background, idempotent per key; ``dry_run`` only counts. Cancelled deliveries and those to
deleted callbacks stay unsent, and another tenant's are never touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app import create_app
from app.events import webhook_id
from app.models import Delivery, DeliveryReplay, DeliveryStatus, ReplayStatus
from app.queues import REPLAY_TASK
from app.services.replays import has_stalled_replays, replay_step
from tests.conftest import error_fields
from tests.factories import make_callback, make_delivery, make_job, make_tenant

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def finished(db_session, delivery: Delivery, status: DeliveryStatus, minute: int) -> Delivery:
    db_session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(
            status=status,
            created_at=T0 + timedelta(minutes=minute),
            next_attempt_at=None,
            attempt_count=3,
        )
    )
    db_session.flush()
    db_session.refresh(delivery)
    return delivery


@pytest.fixture
def log(db_session, owner):
    """Six of the tenant's deliveries a minute apart in every state, and another tenant's."""
    a = make_callback(db_session, owner, "http://127.0.0.1:9/a", event_types=["*"])
    b = make_callback(db_session, owner, "http://127.0.0.1:9/b", event_types=["*"])
    gone = make_callback(db_session, owner, "http://127.0.0.1:9/gone", event_types=["*"])
    made = {
        "paid": make_delivery(db_session, a, event_type="invoice.paid"),
        "declined": make_delivery(db_session, b, event_type="invoice.declined"),
        "refunded": make_delivery(db_session, a, event_type="invoice.refunded"),
        "cancelled": make_delivery(db_session, a, event_type="invoice.voided"),
        "to_deleted": make_delivery(db_session, gone, event_type="invoice.paid"),
    }
    ended = {
        "paid": DeliveryStatus.SUCCEEDED,
        "declined": DeliveryStatus.FAILED,
        "refunded": DeliveryStatus.FAILED,
        "cancelled": DeliveryStatus.CANCELLED,
        "to_deleted": DeliveryStatus.FAILED,
    }
    for minute, (name, status) in enumerate(ended.items()):
        finished(db_session, made[name], status, minute)
    made["pending"] = make_delivery(db_session, b, event_type="invoice.created")
    db_session.delete(gone)  # its deliveries stay, with no callback
    db_session.flush()
    other = make_tenant(db_session, "globex").row
    theirs = make_callback(db_session, other, "http://127.0.0.1:9/theirs", event_types=["*"])
    made["theirs"] = finished(
        db_session, make_delivery(db_session, theirs), DeliveryStatus.FAILED, 0
    )
    return made


def replay(client, auth, body: dict, key: str | None = None):
    headers = dict(auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/deliveries/replay", json=body, headers=headers)


def run_replays(db_session, settings) -> int:
    steps = 0
    while replay_step(db_session, NOW, settings) is not None:
        steps += 1
        assert steps < 100, "a replay that never ends"
    return steps


def status_of(db_session, delivery: Delivery) -> DeliveryStatus:
    return db_session.scalar(select(Delivery.status).where(Delivery.id == delivery.id))


def test_a_dry_run_counts_the_finished_deliveries_and_changes_nothing(
    client, auth, log, db_session, sent_tasks
):
    response = replay(client, auth, {"dry_run": True})

    assert response.status_code == 200, response.json
    assert response.json["dry_run"] is True
    assert response.json["status"] == "dry_run"
    assert response.json["id"] is None
    # paid, declined, refunded: not the cancelled one, the pending one, the one to a deleted
    # callback, nor the other tenant's.
    assert response.json["matched"] == 3
    assert db_session.scalar(select(DeliveryReplay.id)) is None
    assert [task for task in sent_tasks if task.name == REPLAY_TASK] == []


def test_a_replay_resends_every_matching_finished_delivery_once(
    client, auth, log, db_session, settings, sent_tasks
):
    response = replay(client, auth, {"event_type": "invoice.*", "status": "failed"})

    assert response.status_code == 202, response.json
    body = response.json
    assert body["status"] == "running"
    assert body["matched"] == 2
    assert body["replayed"] == 0
    assert body["filter"] == {"event_type": "invoice.*", "status": "failed"}
    assert response.headers["Location"] == f"/v1/deliveries/replays/{body['id']}"
    assert [task.name for task in sent_tasks].count(REPLAY_TASK) == 1

    run_replays(db_session, settings)

    for name in ("declined", "refunded"):
        delivery = db_session.get(Delivery, log[name].id)
        db_session.refresh(delivery)
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.next_attempt_at == NOW
        # One more attempt, as for a manual retry: the last slot of the schedule.
        assert delivery.attempt_count == len(settings.retry_schedule)
    for name in ("paid", "cancelled", "to_deleted", "theirs"):
        assert status_of(db_session, log[name]) != DeliveryStatus.PENDING, name
    progress = client.get(response.headers["Location"], headers=auth).json
    assert progress["status"] == "done"
    assert progress["replayed"] == 2
    assert progress["finished_at"] is not None


def test_a_replay_walks_in_batches_and_meets_each_delivery_once(
    client, auth, db_session, owner, settings
):
    callback = make_callback(db_session, owner, "http://127.0.0.1:9/many", event_types=["*"])
    made = [
        finished(db_session, make_delivery(db_session, callback), DeliveryStatus.FAILED, minute)
        for minute in range(7)
    ]
    small = settings.replace(replay_batch_size=3)
    response = replay(client, auth, {"callback_id": str(callback.id)})
    assert response.json["matched"] == 7

    first = replay_step(db_session, NOW, small)
    assert first is not None and first.replayed == 3 and first.status == ReplayStatus.RUNNING
    # The first batch is the newest three, and they are pending now: if a worker finished them
    # before the walk went on, they would still not be met again (the walk is past them).
    assert {status_of(db_session, d) for d in made[4:]} == {DeliveryStatus.PENDING}
    db_session.execute(
        update(Delivery)
        .where(Delivery.id.in_([d.id for d in made[4:]]))
        .values(status=DeliveryStatus.FAILED)
    )
    steps = 1 + run_replays(db_session, small)

    assert steps == 3
    replayed = db_session.get(DeliveryReplay, first.id)
    db_session.refresh(replayed)
    assert replayed.replayed == 7
    assert replayed.status == ReplayStatus.DONE
    assert {status_of(db_session, d) for d in made[:4]} == {DeliveryStatus.PENDING}


def test_a_repeated_idempotency_key_answers_with_the_first_replay(
    client, auth, log, db_session, sent_tasks
):
    first = replay(client, auth, {"status": "failed"}, key="replay-1")
    again = replay(client, auth, {"status": "failed"}, key="replay-1")
    different = replay(client, auth, {"status": "succeeded"}, key="replay-1")

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]
    assert different.status_code == 409
    assert "Idempotency-Key" in different.json["message"]
    assert len(db_session.scalars(select(DeliveryReplay.id)).all()) == 1


def test_a_replay_by_webhook_id_shows_the_webhook_id_it_was_given(client, auth, log):
    wanted = webhook_id(log["paid"].message_id)

    response = replay(client, auth, {"webhook_id": wanted})

    assert response.status_code == 202
    assert response.json["matched"] == 1
    assert response.json["filter"] == {"webhook_id": wanted}


def test_an_ad_hoc_delivery_to_its_jobs_own_url_may_be_replayed(
    client, auth, db_session, owner, settings
):
    job = make_job(db_session, owner, callback_url="http://127.0.0.1:9/adhoc")
    hook = make_callback(db_session, owner, "http://127.0.0.1:9/adhoc", event_types=["*"])
    delivery = finished(
        db_session, make_delivery(db_session, hook, job_id=job.id), DeliveryStatus.FAILED, 0
    )
    # As an ad-hoc delivery is stored: no callback, the job's own URL.
    db_session.execute(update(Delivery).where(Delivery.id == delivery.id).values(callback_id=None))
    db_session.delete(hook)
    db_session.flush()

    response = replay(client, auth, {"job_id": str(job.id)})

    assert response.json["matched"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "pending"}, "status"),
        ({"status": "cancelled"}, "status"),
        ({"event_type": "invoice*"}, "event_type"),
        ({"webhook_id": "nope"}, "webhook_id"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "until"),
        ({"dry_run": "maybe"}, "dry_run"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_filter_is_a_422_naming_it_and_starts_nothing(
    client, auth, log, db_session, body, field
):
    response = replay(client, auth, body)

    assert response.status_code == 422, response.json
    assert field in error_fields(response)
    assert db_session.scalar(select(DeliveryReplay.id)) is None


def test_a_replay_wider_than_the_limit_is_refused_and_asks_to_narrow_it(
    settings, auth, log, db_session
):
    narrow = create_app(
        settings.replace(replay_max_deliveries=2), session_factory=lambda: db_session
    )

    response = replay(narrow.test_client(), auth, {})

    assert response.status_code == 422
    assert "narrow it" in error_fields(response)["since"][0]
    assert db_session.scalar(select(DeliveryReplay.id)) is None


def test_another_tenants_replay_is_not_found(client, auth, other_auth, log):
    started = replay(client, auth, {"status": "failed"})

    response = client.get(started.headers["Location"], headers=other_auth)

    assert response.status_code == 404


def test_a_replay_no_worker_has_touched_within_its_lease_is_found_by_the_sweep(
    client, auth, log, db_session, settings
):
    replay(client, auth, {"status": "failed"})
    assert has_stalled_replays(db_session, NOW)  # never stepped

    small = settings.replace(replay_batch_size=1)
    stepped = replay_step(db_session, NOW, small)
    assert stepped is not None and stepped.status == ReplayStatus.RUNNING
    assert not has_stalled_replays(db_session, NOW)  # a worker is on it
    assert has_stalled_replays(db_session, NOW + timedelta(minutes=2))  # ... and then was not
