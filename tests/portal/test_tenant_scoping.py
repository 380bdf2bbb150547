"""Every portal page is scoped to the signed-in tenant: another tenant's ids answer 404, exactly
like ids that do not exist, and actions on them change nothing."""

from __future__ import annotations

import uuid

import pytest

from app.models import Callback, Delivery, DeliveryStatus
from tests.factories import make_callback, make_delivery, make_job
from tests.portal.conftest import add_attempt

MISSING = str(uuid.uuid4())


@pytest.fixture
def theirs(db_session, other_tenant):
    """Another tenant's callback, job and a failed delivery of that job."""
    tenant = other_tenant.row
    callback = make_callback(db_session, tenant, "http://127.0.0.1:9/theirs")
    job = make_job(db_session, tenant, input={"secret-plan": 1})
    delivery = make_delivery(db_session, callback, job_id=job.id)
    delivery.status = DeliveryStatus.FAILED
    add_attempt(db_session, delivery, status=500, succeeded=False, body="their body")
    db_session.commit()
    return {"callback": callback.id, "job": job.id, "delivery": delivery.id}


@pytest.mark.parametrize(
    "path",
    [
        "/portal/callbacks/{callback}",
        "/portal/callbacks/{callback}/edit",
        "/portal/jobs/{job}",
        "/portal/deliveries/{delivery}",
        "/portal/deliveries?callback={callback}",
    ],
)
def test_another_tenants_pages_are_not_found(signed_in, theirs, path):
    response = signed_in.client.get(path.format(**theirs))
    missing = signed_in.client.get(path.format(callback=MISSING, job=MISSING, delivery=MISSING))

    assert response.status_code == 404
    assert missing.status_code == 404
    page = response.get_data(as_text=True)
    assert "Not found" in page
    assert "theirs" not in page and "their body" not in page
    # A 404 says no more than a missing id's does.
    assert page == missing.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/portal/callbacks/{callback}/edit",
        "/portal/callbacks/{callback}/enable",
        "/portal/callbacks/{callback}/disable",
        "/portal/callbacks/{callback}/secret",
        "/portal/callbacks/{callback}/rotate-secret",
        "/portal/callbacks/{callback}/test",
        "/portal/callbacks/{callback}/recover",
        "/portal/deliveries/{delivery}/retry",
    ],
)
def test_another_tenants_things_cannot_be_changed(signed_in, theirs, db_session, sent_tasks, path):
    before = db_session.get(Callback, theirs["callback"])
    secret, url = before.secret, before.url
    sent_tasks.clear()

    response = signed_in.post(
        path.format(**theirs),
        {"url": "http://127.0.0.1:9/mine", "event_types": ["job.failed"], "since": "2000-01-01"},
    )

    assert response.status_code == 404
    assert secret not in response.get_data(as_text=True)
    db_session.expire_all()
    after = db_session.get(Callback, theirs["callback"])
    assert (after.secret, after.url, after.enabled) == (secret, url, True)
    assert db_session.get(Delivery, theirs["delivery"]).status == DeliveryStatus.FAILED
    assert sent_tasks == []


def test_lists_show_only_the_tenants_own(signed_in, theirs, tenant, db_session):
    mine = make_callback(db_session, tenant.row, "http://127.0.0.1:9/mine")
    make_delivery(db_session, mine)

    for path in ("/portal/", "/portal/callbacks", "/portal/jobs", "/portal/deliveries"):
        page = signed_in.text(path)
        assert "/theirs" not in page, path
        assert str(theirs["job"]) not in page, path
        assert str(theirs["delivery"])[:8] not in page, path
    assert "/mine" in signed_in.text("/portal/callbacks")
