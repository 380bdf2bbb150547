"""The stack a Flask + Celery tutorial builds, as the reference Boomerang must beat.

- ``naive.deliver``: one Celery task per callback, for the delivery-only throughput reference.
- The whole user's path (with ``bench/naive/web.py``): the view INSERTs the job and calls
  ``run_job.delay()``; ``naive.run_job`` runs the echo job and calls ``send_callback.delay()``;
  ``naive.send_callback`` reads the tenant's callback row, signs the result (Standard Webhooks)
  and ``requests.post``s it.

Every POST uses ``requests.post`` (a new connection each time), retries through Celery's
``autoretry_for`` and INSERTs one row per attempt into its own small table. Broker and database
come from ``NAIVE_BROKER_URL`` and ``NAIVE_DATABASE_URL``.

    celery -A bench.naive.app worker -Q naive --pool prefork --concurrency 8
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import psycopg2
import requests
from celery import Celery
from standardwebhooks.webhooks import Webhook

QUEUE = "naive"
TASK = "naive.deliver"
TABLE_DDL = """
CREATE TABLE IF NOT EXISTS naive_tenant (
    id uuid PRIMARY KEY,
    api_key text NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS naive_callback (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES naive_tenant (id),
    url text NOT NULL,
    secret text NOT NULL
);
CREATE TABLE IF NOT EXISTS naive_job (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES naive_tenant (id),
    type text NOT NULL,
    input jsonb NOT NULL,
    status text NOT NULL,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS naive_attempt (
    id bigserial PRIMARY KEY,
    webhook_id text NOT NULL,
    url text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status integer,
    error text,
    duration_ms integer NOT NULL
)
"""

app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/14"))
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
)

_connection = None


def _db():
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg2.connect(os.environ["NAIVE_DATABASE_URL"])
        _connection.autocommit = True
    return _connection


def _log(webhook_id: str, url: str, status: int | None, error: str | None, ms: int) -> None:
    with _db().cursor() as cursor:
        cursor.execute(
            "INSERT INTO naive_attempt (webhook_id, url, status, error, duration_ms)"
            " VALUES (%s, %s, %s, %s, %s)",
            (webhook_id, url, status, error, ms),
        )


@app.task(
    name=TASK,
    autoretry_for=(requests.RequestException,),
    retry_backoff=5,
    retry_jitter=True,
    max_retries=9,
)
def deliver(url: str, body: str, headers: dict[str, str]) -> None:
    started = time.monotonic()
    try:
        response = requests.post(url, data=body.encode(), headers=headers, timeout=(5, 15))
    except requests.RequestException as exc:
        _log(headers["webhook-id"], url, None, str(exc)[:500], _ms(started))
        raise
    _log(headers["webhook-id"], url, response.status_code, None, _ms(started))
    response.raise_for_status()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


RUN_JOB = "naive.run_job"
SEND_CALLBACK = "naive.send_callback"


@app.task(name=RUN_JOB)
def run_job(job_id: str) -> None:
    """Run the echo job, store its result, and hand the callback to another task."""
    with _db().cursor() as cursor:
        cursor.execute("SELECT input FROM naive_job WHERE id = %s", (job_id,))
        (job_input,) = cursor.fetchone()
        cursor.execute(
            "UPDATE naive_job SET status = 'succeeded', result = %s, finished_at = now()"
            " WHERE id = %s",
            (json.dumps(job_input), job_id),
        )
    send_callback.delay(job_id)


@app.task(
    name=SEND_CALLBACK,
    autoretry_for=(requests.RequestException,),
    retry_backoff=5,
    retry_jitter=True,
    max_retries=9,
)
def send_callback(job_id: str) -> None:
    """POST the signed result to the tenant's callback and log the attempt."""
    with _db().cursor() as cursor:
        cursor.execute(
            "SELECT j.result, c.url, c.secret FROM naive_job j"
            " JOIN naive_callback c ON c.tenant_id = j.tenant_id WHERE j.id = %s",
            (job_id,),
        )
        result, url, secret = cursor.fetchone()
    now = datetime.now(UTC)
    webhook_id = "msg_" + job_id.replace("-", "")
    body = json.dumps(
        {
            "type": "job.succeeded",
            "timestamp": now.isoformat(),
            "data": {"id": job_id, "result": result},
        }
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
    }
    deliver(url, body, headers)
