"""What the stream process reads from Postgres. Blocking calls: run them in a thread."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.events import webhook_id
from app.models import Job, JobStatus, Tenant
from app.schemas import JobSchema
from app.services.tenants import authenticate

TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True)
class Event:
    """A stored event as the stream sends it: its webhook-id, type and exact envelope."""

    id: str
    type: str
    body: str
    txid: int
    seq: int
    created_at: datetime


@dataclass(frozen=True)
class JobState:
    tenant_id: uuid.UUID
    document: dict[str, Any]
    etag: str
    ended: bool


class Reads:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def tenant_by_key(self, api_key: str) -> Tenant | None:
        with Session(self.engine) as session:
            return authenticate(session, api_key)

    def tenant(self, tenant_id: uuid.UUID) -> Tenant | None:
        with Session(self.engine) as session:
            return session.get(Tenant, tenant_id)

    def job_state(self, job_id: uuid.UUID) -> JobState | None:
        with Session(self.engine) as session:
            job = session.get(Job, job_id)
            if job is None:
                return None
            document = JobSchema().dump(job)
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
        # The ETag is the state's own digest: equal states, equal tags, on any process.
        etag = '"' + hashlib.sha256(encoded.encode()).hexdigest()[:32] + '"'
        return JobState(job.tenant_id, document, etag, job.status in TERMINAL)

    def job_fingerprints(self, job_ids: list[str]) -> dict[str, str]:
        """For each job, a digest that changes whenever its state or its events do."""
        with Session(self.engine) as session:
            rows = session.execute(
                text(
                    """
                    SELECT job.id::text, md5(concat_ws('|', job.status, job.progress::text,
                        (SELECT max(seq) FROM message WHERE message.job_id = job.id)))
                    FROM job WHERE job.id = ANY(CAST(:ids AS uuid[]))
                    """
                ),
                {"ids": job_ids},
            ).all()
        return dict(rows)

    def job_events(self, job_id: uuid.UUID, after: str | None = None) -> list[Event]:
        """The job's events in the order they were written, after webhook-id ``after`` if given."""
        with Session(self.engine) as session:
            rows = session.execute(
                text(
                    "SELECT id, event_type, body, txid::text::bigint, seq, created_at FROM message "
                    "WHERE job_id = :job_id ORDER BY txid, seq"
                ),
                {"job_id": job_id},
            ).all()
        events = [Event(webhook_id(row[0]), *row[1:]) for row in rows]
        if after is not None:
            ids = [event.id for event in events]
            events = events[ids.index(after) + 1 :] if after in ids else events
        return events

    def feed(
        self,
        tenant_id: uuid.UUID,
        cursor: FeedCursor | None,
        types: list[str] | None,
        limit: int,
    ) -> list[Event]:
        """The tenant's events after ``cursor`` in commit-safe order: only below the oldest
        transaction still running, so one that commits late can never fall behind a cursor."""
        with Session(self.engine) as session:
            rows = session.execute(
                text(
                    """
                    SELECT id, event_type, body, txid::text::bigint, seq, created_at FROM message
                    WHERE tenant_id = :tenant_id
                      AND (txid, seq) > (CAST(:txid AS text)::xid8, :seq)
                      AND txid < pg_snapshot_xmin(pg_current_snapshot())
                      AND (CAST(:types AS text[]) IS NULL OR event_type = ANY(:types))
                    ORDER BY txid, seq
                    LIMIT :limit
                    """
                ),
                {
                    "tenant_id": tenant_id,
                    "txid": str(cursor.txid if cursor else 0),
                    "seq": cursor.seq if cursor else 0,
                    "types": types,
                    "limit": limit,
                },
            ).all()
        return [Event(webhook_id(row[0]), *row[1:]) for row in rows]


@dataclass(frozen=True)
class FeedCursor:
    """Where a feed reader is: the last event's (txid, seq) and when that event was made (older
    than the retention, and the events after it may have been pruned)."""

    txid: int
    seq: int
    made_at: datetime

    def encode(self) -> str:
        raw = f"{self.txid}.{self.seq}.{int(self.made_at.timestamp())}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> FeedCursor:
        """A cursor this service made, or ValueError."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
            txid, seq, made = (int(part) for part in raw.split("."))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValueError("not a cursor this service made") from None
        if txid < 0 or seq < 0 or not 0 <= made < 2**40:
            raise ValueError("not a cursor this service made")
        return cls(txid, seq, datetime.fromtimestamp(made, UTC))

    def expired(self, now: datetime, retention: timedelta) -> bool:
        return self.made_at < now - retention
