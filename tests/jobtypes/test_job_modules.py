"""Users add job types from their own modules, named in BOOMERANG_JOB_MODULES."""

from app import create_app
from app.jobtypes import get_job_type
from app.models import Job, JobStatus
from tests.job_runs import execute_job


def test_a_job_module_named_in_settings_is_registered_and_runs(settings, db_session, tenant):
    custom = settings.replace(job_modules=("tests.custom_jobs",))
    app = create_app(custom, session_factory=lambda: db_session)
    assert get_job_type("shout") is not None

    response = app.test_client().post(
        "/v1/jobs",
        json={"type": "shout", "input": {"text": "hi"}},
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )
    assert response.status_code == 202, response.get_json()

    job_id = response.get_json()["id"]
    assert execute_job(db_session, custom, job_id) is True
    db_session.expire_all()
    done = db_session.get(Job, job_id)
    assert done.status == JobStatus.SUCCEEDED
    assert done.result == {"text": "HI"}


def test_a_missing_job_module_stops_the_start_with_its_name(settings):
    import pytest

    with pytest.raises(ModuleNotFoundError, match="no_such_jobs"):
        create_app(settings.replace(job_modules=("no_such_jobs",)))
