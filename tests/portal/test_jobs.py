"""The job pages: a filtered, paged list, and one job with its deliveries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from app.models import DeliveryStatus, JobStatus
from tests.factories import make_callback, make_delivery, make_job
from tests.portal.conftest import add_attempt

JOB_LINK = re.compile(r'href="/portal/jobs/([0-9a-f-]{36})"')


def test_it_lists_jobs_newest_first_and_filters_by_status(signed_in, db_session, tenant):
    now = datetime.now(UTC)
    older = make_job(
        db_session, tenant.row, status=JobStatus.SUCCEEDED, created_at=now - timedelta(1)
    )
    newer = make_job(db_session, tenant.row, status=JobStatus.SUCCEEDED, created_at=now)
    failed = make_job(db_session, tenant.row, status=JobStatus.FAILED, created_at=now)

    every = JOB_LINK.findall(signed_in.text("/portal/jobs"))
    succeeded = JOB_LINK.findall(signed_in.text("/portal/jobs?status=succeeded"))

    assert set(every) == {str(older.id), str(newer.id), str(failed.id)}
    assert every[-1] == str(older.id)
    assert succeeded == [str(newer.id), str(older.id)]


def test_it_pages_through_jobs(signed_in, db_session, tenant):
    now = datetime.now(UTC)
    made = [
        make_job(db_session, tenant.row, created_at=now - timedelta(seconds=n)) for n in range(30)
    ]

    first = signed_in.text("/portal/jobs")
    cursor = re.search(r'href="/portal/jobs\?cursor=([^"]+)" rel="next"', first)
    assert cursor, "the first page links to the next"
    second = signed_in.text(f"/portal/jobs?cursor={cursor.group(1)}")

    shown = JOB_LINK.findall(first) + JOB_LINK.findall(second)
    assert shown == [str(job.id) for job in made]
    assert 'rel="next"' not in second
    assert "Newest" in second


@pytest.mark.parametrize("query", ["status=exploded", "cursor=not-a-cursor"])
def test_a_bad_filter_is_a_400_page(signed_in, query):
    response = signed_in.client.get(f"/portal/jobs?{query}")

    assert response.status_code == 400
    assert "cannot be shown" in response.get_data(as_text=True)


def test_a_job_page_shows_input_result_progress_and_deliveries(signed_in, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:9/hook")
    job = make_job(
        db_session,
        tenant.row,
        input={"text": "the cat & the hat"},
        status=JobStatus.SUCCEEDED,
        result={"words": 5},
        progress={"percent": 100, "message": "done counting"},
        finished_at=datetime.now(UTC),
    )
    delivery = make_delivery(db_session, callback, job_id=job.id)
    delivery.status = DeliveryStatus.SUCCEEDED
    add_attempt(db_session, delivery)

    page = signed_in.text(f"/portal/jobs/{job.id}")

    assert "the cat &amp; the hat" in page
    assert "&#34;words&#34;: 5" in page  # the result, as indented JSON
    assert 'value="100"' in page and "done counting" in page
    assert f'href="/portal/deliveries/{delivery.id}"' in page
    assert "data-refresh-seconds" not in page  # finished, nothing on its way


def test_a_failed_job_shows_its_error(signed_in, db_session, tenant):
    job = make_job(
        db_session,
        tenant.row,
        status=JobStatus.FAILED,
        error="ValueError: <no> good",
        finished_at=datetime.now(UTC),
    )

    page = signed_in.text(f"/portal/jobs/{job.id}")

    assert "ValueError: &lt;no&gt; good" in page


def test_a_running_job_page_refreshes_itself(signed_in, db_session, tenant):
    job = make_job(db_session, tenant.row, status=JobStatus.RUNNING)

    assert 'data-refresh-seconds="2"' in signed_in.text(f"/portal/jobs/{job.id}")
