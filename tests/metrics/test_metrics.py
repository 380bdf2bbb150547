"""Prometheus metrics: what is counted, when, how /metrics answers, and counts across processes."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client import values as prometheus_values
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from app import create_app
from app.metrics.files import MachineCollector, ReservedMmapedDict, prepare_metrics_dir
from app.models import Tenant
from app.services.callback_health import disable_callback
from app.services.jobs import submit_job
from config.settings import Settings, SettingsError
from tests.factories import make_callback, make_delivery, make_job
from tests.job_runs import execute_job
from tests.support.processes import free_port
from workers.delivery.http import ErrorKind, HttpResult

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "metrics-token-for-tests-0123456789"


def scrape(client, **headers) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample /metrics answers, by name and labels."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return samples_of(response.get_data(as_text=True))


def samples_of(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize(
    ("status", "error_kind", "outcome"),
    [
        (200, None, "2xx"),
        (204, None, "2xx"),
        (302, None, "3xx"),
        (410, None, "4xx"),
        (429, None, "4xx"),
        (503, None, "5xx"),
        (None, ErrorKind.TIMEOUT, "timeout"),
        (None, ErrorKind.CONNECTION, "connection_error"),
        (None, ErrorKind.BLOCKED, "blocked"),
        (None, ErrorKind.TOO_LARGE, "too_large"),
        (None, None, "error"),
        (999, None, "error"),
    ],
)
def test_it_labels_an_attempt_by_what_came_back(status, error_kind, outcome):
    result = HttpResult(status, None, None, False, 0, error_kind=error_kind)
    assert result.outcome == outcome


def test_it_serves_prometheus_text_with_no_caching(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    assert "# TYPE boomerang_deliveries_due gauge" in response.get_data(as_text=True)


def test_it_counts_a_submitted_job_once_and_not_its_idempotent_repeat(client, auth):
    before = scrape(client)
    headers = {**auth, "Idempotency-Key": f"metrics-{uuid.uuid4()}"}
    for _ in range(2):
        response = client.post("/v1/jobs", json={"type": "digest", "input": {}}, headers=headers)
        assert response.status_code in (200, 202)

    after = scrape(client)

    submitted = "boomerang_jobs_submitted_total"
    assert value(after, submitted, type="digest") - value(before, submitted, type="digest") == 1


def test_it_counts_published_events_once_and_not_a_repeated_event_id(client, auth, db_session):
    db_session.execute(update(Tenant).values(allow_uncatalogued_event_types=True))
    before = scrape(client)
    event = {"type": "invoice.paid", "data": {}, "id": f"metrics-{uuid.uuid4()}"}
    for _ in range(2):
        assert client.post("/v1/events", json=event, headers=auth).status_code in (200, 202)
    batch = {"events": [event, {"type": "invoice.voided", "data": {}}]}
    assert client.post("/v1/events:batch", json=batch, headers=auth).status_code == 202

    after = scrape(client)
    published = "boomerang_events_published_total"
    assert value(after, published) - value(before, published) == 2


def test_it_counts_nothing_for_a_submission_that_rolls_back(client, db_session, settings, tenant):
    before = scrape(client)

    submit_job(db_session, tenant.row, {"type": "sleep", "input": {}}, settings, datetime.now(UTC))
    db_session.rollback()

    after = scrape(client)
    submitted = "boomerang_jobs_submitted_total"
    assert value(after, submitted, type="sleep") == value(before, submitted, type="sleep")


def test_it_counts_finished_jobs_by_status_with_their_duration(
    client, db_session, settings, tenant
):
    before = scrape(client)
    succeeding = make_job(db_session, tenant.row, "echo", {})
    failing = make_job(db_session, tenant.row, "fail", {"message": "no"})

    assert execute_job(db_session, settings, succeeding.id) is True
    assert execute_job(db_session, settings, failing.id) is False

    after = scrape(client)
    finished = "boomerang_jobs_finished_total"
    for job_type, status in (("echo", "succeeded"), ("fail", "failed")):
        labels = {"type": job_type, "status": status}
        assert value(after, finished, **labels) - value(before, finished, **labels) == 1
        count = "boomerang_job_duration_seconds_count"
        assert value(after, count, type=job_type) - value(before, count, type=job_type) == 1


def test_it_counts_a_callback_disabled_once_committed(client, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    before = scrape(client)

    disable_callback(db_session, callback.id, "testing", datetime.now(UTC))
    disable_callback(db_session, callback.id, "again: already disabled", datetime.now(UTC))
    mid = scrape(client)  # the test client commits first, so this sees the committed disable
    after = scrape(client)

    disabled = "boomerang_callbacks_disabled_total"
    assert value(mid, disabled) - value(before, disabled) == 1
    assert value(after, disabled) == value(mid, disabled)
    gauge = "boomerang_disabled_callbacks"
    assert value(after, gauge) - value(before, gauge) == 1


def test_the_backlog_gauges_split_pending_deliveries_by_state(client, db_session, tenant):
    callback = make_callback(db_session, tenant.row, "http://127.0.0.1:1/hook")
    before = scrape(client)
    now = datetime.now(UTC)
    due = make_delivery(db_session, callback)
    due.next_attempt_at = now - timedelta(seconds=600)
    leased = make_delivery(db_session, callback)
    leased.next_attempt_at = now - timedelta(seconds=5)
    leased.locked_until = now + timedelta(seconds=60)
    lease_ran_out = make_delivery(db_session, callback)
    lease_ran_out.next_attempt_at = now - timedelta(seconds=5)
    lease_ran_out.locked_until = now - timedelta(seconds=1)
    waiting = make_delivery(db_session, callback)
    waiting.next_attempt_at = now + timedelta(hours=1)
    db_session.flush()

    after = scrape(client)

    def grew(name: str) -> float:
        return value(after, name) - value(before, name)

    assert grew("boomerang_deliveries_due") == 2  # a lease that ran out is due again
    assert grew("boomerang_deliveries_leased") == 1
    assert grew("boomerang_deliveries_waiting") == 1
    assert value(after, "boomerang_deliveries_due_oldest_seconds") >= 600


def test_it_asks_for_the_token_when_one_is_set(settings, db_session):
    app = create_app(settings.replace(metrics_token=TOKEN), session_factory=lambda: db_session)
    client = app.test_client()

    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
    right = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.get_json()["code"] == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert "boomerang_deliveries_due" in right.get_data(as_text=True)


def test_it_still_answers_with_the_process_counts_while_postgres_is_down(settings):
    closed = free_port()
    broken = settings.replace(database_url=f"postgresql://postgres@127.0.0.1:{closed}/boomerang")
    client = create_app(broken).test_client()

    response = client.get("/metrics")

    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "boomerang_jobs_submitted" in text
    assert "boomerang_deliveries_due" not in text


def test_it_is_not_part_of_the_api_document(client):
    assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]


# Many processes ---------------------------------------------------------------------------------


def count_in_a_process_of_its_own(directory: Path, jobs: int) -> None:
    """Run a separate Python process that counts ``jobs`` submitted echo jobs in ``directory``."""
    script = textwrap.dedent(
        f"""
        from app.metrics import enable_multiprocess, job_submitted
        enable_multiprocess({str(directory)!r})
        for _ in range({jobs}):
            job_submitted("echo")
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)


def submitted_in(directory: Path) -> float:
    for family in MachineCollector(directory).collect():
        for sample in family.samples:
            if sample.name == "boomerang_jobs_submitted_total" and sample.labels == {
                "type": "echo"
            }:
                return sample.value
    return 0.0


def test_it_adds_up_what_every_process_on_the_machine_counted(tmp_path):
    count_in_a_process_of_its_own(tmp_path, 2)
    count_in_a_process_of_its_own(tmp_path, 3)

    assert submitted_in(tmp_path) == 5


def test_an_ended_process_counts_stay_in_the_totals_but_its_files_go(tmp_path):
    count_in_a_process_of_its_own(tmp_path, 2)
    count_in_a_process_of_its_own(tmp_path, 3)  # folds the first one in as it starts
    # A file of a process that is still running (this one) is left as it is.
    live = tmp_path / f"counter_{os.getpid()}.db"
    shutil.copy(tmp_path / "counter_archive.db", live)

    prepare_metrics_dir(tmp_path)

    names = {path.name for path in tmp_path.glob("*.db")}
    assert names == {"counter_archive.db", "histogram_archive.db", live.name}
    assert submitted_in(tmp_path) == 2 + 3 + 2


def test_preparing_creates_a_missing_directory(tmp_path):
    directory = tmp_path / "not" / "yet"

    assert prepare_metrics_dir(directory).is_dir()


def test_boomerang_metrics_serves_the_machines_counts_behind_the_token(tmp_path):
    count_in_a_process_of_its_own(tmp_path, 4)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BOOMERANG_")},
        "BOOMERANG_METRICS_DIR": str(tmp_path),
        "BOOMERANG_METRICS_TOKEN": TOKEN,
    }
    server = subprocess.Popen(
        [str(BIN / "boomerang"), "metrics", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:  # until it listens
            try:
                refused = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                assert server.poll() is None, "boomerang metrics exited"
                assert time.monotonic() < deadline, "boomerang metrics never listened"
                time.sleep(0.1)
        answered = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    finally:
        server.terminate()
        server.wait(10)

    assert refused.status_code == 401
    assert refused.json()["code"] == 401
    assert answered.status_code == 200
    samples = samples_of(answered.text)
    assert value(samples, "boomerang_jobs_submitted_total", type="echo") == 4


def test_a_guessable_metrics_token_is_refused_at_start():
    with pytest.raises(SettingsError, match="BOOMERANG_METRICS_TOKEN"):
        Settings.from_env({"BOOMERANG_METRICS_TOKEN": "secret"})


def no_space(*_args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_value_file_reserves_its_space_before_it_is_mapped(tmp_path):
    path = tmp_path / "counter_1.db"
    values = ReservedMmapedDict(str(path))
    for number in range(5000):  # well past the first 64 KiB: the file grows
        values.write_value(f"key-{number}", float(number), 0.0)
    values.close()
    stat = path.stat()
    assert stat.st_size > 1 << 16
    assert stat.st_blocks * 512 >= stat.st_size  # allocated, not sparse


def test_a_full_disk_refuses_a_new_value_file_and_leaves_no_empty_one(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError):
        ReservedMmapedDict(str(tmp_path / "counter_1.db"))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_refuses_to_grow_a_value_file_and_keeps_what_it_holds(tmp_path, monkeypatch):
    values = ReservedMmapedDict(str(tmp_path / "counter_1.db"))
    values.write_value("kept", 1.0, 0.0)
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError):
        for number in range(5000):
            values.write_value(f"key-{number}", 1.0, 0.0)
    assert values.read_value("kept") == (1.0, 0.0)
    values.close()


def test_a_metric_on_a_full_disk_is_dropped_without_raising(tmp_path, monkeypatch):
    from app import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    monkeypatch.setattr(prometheus_values, "ValueClass", prometheus_values.MultiProcessValue())
    monkeypatch.setattr(prometheus_values, "MmapedDict", ReservedMmapedDict)
    metrics._metrics.cache_clear()
    try:
        metrics.delivery_attempted("2xx")  # no exception, no SIGBUS
    finally:
        metrics._metrics.cache_clear()
    assert list(tmp_path.glob("*.db")) == []
