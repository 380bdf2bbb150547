"""While Postgres is unreachable the API says so plainly (503), and workers wait it out."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy.exc import OperationalError

from app import create_app
from app.db import commit_with_retry


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_without_database(settings):
    broken = settings.replace(
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/boomerang"
    )
    return create_app(broken).test_client()


def test_the_api_answers_503_with_the_error_shape_when_postgres_is_down(app_without_database):
    response = app_without_database.get(
        "/v1/jobs", headers={"Authorization": "Bearer bmr_000000000000.secret"}
    )
    assert response.status_code == 503
    body = response.get_json()
    assert body["code"] == 503
    assert "database" in body["message"].lower()
    assert "Traceback" not in response.get_data(as_text=True)
    assert response.headers["Retry-After"]


def test_readyz_says_503_when_postgres_is_down(app_without_database):
    response = app_without_database.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["postgres"].startswith("unreachable")
    assert response.get_json()["checks"]["redis"] == "ok"


class FlakySession:
    """Stands in for a session at the edge: only commit and rollback are used."""

    def __init__(self):
        self.commits = 0
        self.rollbacks = 0

    def commit(self):
        self.commits += 1

    def rollback(self):
        self.rollbacks += 1


def outage(times: int):
    calls = {"n": 0}

    def work():
        calls["n"] += 1
        if calls["n"] <= times:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "recorded"

    return work


def test_a_step_after_an_irreversible_action_waits_for_the_database():
    session = FlakySession()
    naps = []
    assert commit_with_retry(session, outage(3), 60, sleep=naps.append) == "recorded"
    assert session.rollbacks == 3
    assert session.commits == 1
    assert naps == [0.25, 0.5, 1.0]


def test_it_gives_up_when_the_outage_outlasts_the_deadline():
    with pytest.raises(OperationalError):
        commit_with_retry(FlakySession(), outage(100), 0.1, sleep=lambda _s: None)


def test_tasks_registered_before_a_savepoint_wait_for_the_real_commit(db_session, sent_tasks):
    from app.db import enqueue_after_commit

    enqueue_after_commit(db_session, "boomerang.deliver", "x", queue="deliveries")
    with db_session.begin_nested():
        pass
    assert sent_tasks == []
    try:
        with db_session.begin_nested():
            raise RuntimeError
    except RuntimeError:
        pass
    db_session.commit()
    assert [call.args for call in sent_tasks] == [("x",)]
