"""What a webhook sender often starts as: one Celery task per callback on a prefork worker.

Each task POSTs with ``requests.post`` (a new connection each time), retries through Celery's
``autoretry_for`` and INSERTs one row per attempt into its own small table. Broker and database
come from ``NAIVE_BROKER_URL`` and ``NAIVE_DATABASE_URL``.

    celery -A bench.naive.app worker -Q naive --pool prefork --concurrency 8
"""

from __future__ import annotations

import os
import time

import psycopg2
import requests
from celery import Celery

QUEUE = "naive"
TASK = "naive.deliver"
TABLE_DDL = """
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
