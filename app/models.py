"""The data model: tenants and their keys, callbacks, jobs, and the delivery log.

Following Svix, an event is a ``Message``; each destination it goes to is a ``Delivery``; each
HTTP call is a ``DeliveryAttempt``. Due times and leases live here, never only in the broker.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import UserDefinedType


class Xid8(UserDefinedType[int]):
    """Postgres's 64-bit transaction id, as ``pg_current_xact_id()`` gives it."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "xid8"


# So that reflection (Alembic's comparison of models and migrations) knows the type.
postgresql_base.ischema_names.setdefault("xid8", Xid8)


class Base(DeclarativeBase):
    """Declarative base; the schema itself is made by Alembic."""


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _tenant_fk(index: bool = True) -> Mapped[uuid.UUID]:
    # A tenant's rows go with it: deleting a tenant deletes everything it owns.
    return mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False, index=index)


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _str_enum(enum_cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        values_callable=lambda cls: [m.value for m in cls],
        native_enum=False,
        length=16,
        validate_strings=True,
    )


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Tenant(Base):
    __tablename__ = "tenant"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    # Signs deliveries to ad-hoc callback URLs and redirect parameters.
    signing_secret: Mapped[str] = mapped_column(String(100), nullable=False)
    # Where a job's redirect_url may send a browser: origins ("https://shop.example") the tenant
    # listed on purpose, kept apart from its callback URLs (a callback URL proves nothing).
    redirect_origins: Mapped[list[str]] = mapped_column(
        ARRAY(String(300)), nullable=False, default=list, server_default=text("'{}'")
    )
    # Web origins whose pages may read this tenant's streams and long polls (CORS).
    cors_origins: Mapped[list[str]] = mapped_column(
        ARRAY(String(300)), nullable=False, default=list, server_default=text("'{}'")
    )
    # Whether an event type missing from the tenant's catalogue may be published: off, so a typo
    # in a publisher is a 422, not an event nobody subscribes to.
    allow_uncatalogued_event_types: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = _created_at()


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    prefix: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    # Only a SHA-256 of the secret part is stored; the key is shown once.
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _created_at()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tenant: Mapped[Tenant] = relationship()


class Callback(Base):
    __tablename__ = "callback"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    url: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(100)), nullable=False)
    # Channels it listens on; empty: every event of its types, with channels or without.
    channels: Mapped[list[str]] = mapped_column(
        ARRAY(String(128)), nullable=False, default=list, server_default=text("'{}'")
    )
    success_status: Mapped[int | None] = mapped_column(Integer)
    # Limits the whole fleet keeps to for this callback (workers/delivery/shared_lanes.py);
    # NULL: at most ``callback_concurrency`` in flight, and no rate.
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    rate_limit_per_second: Mapped[float | None] = mapped_column(Float)
    # Seconds before each retry, in place of BOOMERANG_RETRY_SCHEDULE; NULL: the service's.
    retry_schedule: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    # A CEL expression its events must pass (app/filters.py); NULL: every event of its types.
    filter: Mapped[str | None] = mapped_column(Text)
    # Extra request headers the tenant wants on every delivery (checked when set).
    headers: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, default=dict, server_default=text("'{}'::jsonb")
    )
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # The current run of failed attempts; cleared by any success. Drives automatic disabling.
    consecutive_failures: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When ``callback.failing`` went out for the current streak; NULL until then. Set and cleared
    # only by conditional updates, so each incident is announced (and closed) exactly once.
    failing_reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The body format and the version pinned at registration (see app/formats.py): a released
    # version never changes, so what a receiver parses never changes under it.
    format: Mapped[str] = mapped_column(
        String(32), nullable=False, default="envelope", server_default="envelope"
    )
    format_version: Mapped[int] = mapped_column(
        Integer, nullable=False, default=1, server_default="1"
    )
    secret: Mapped[str] = mapped_column(String(100), nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        # Every event looks up its tenant's filtered callbacks: most tenants have none.
        Index(
            "ix_callback_tenant_filtered", "tenant_id", postgresql_where=text("filter IS NOT NULL")
        ),
    )


class EventType(Base):
    """A type in a tenant's catalogue of the events it publishes: what it means and, optionally,
    the JSON Schema (Draft 2020-12) its data must meet."""

    __tablename__ = "event_type"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk(index=False)  # the unique constraint leads with it
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Still published and delivered; listed as deprecated so publishers and receivers move off.
    deprecated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_event_type_tenant_name"),)


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_job_tenant_idempotency_key"),
        Index("ix_job_tenant_created", "tenant_id", "created_at", "id"),
        # Retention prunes finished jobs by age.
        Index(
            "ix_job_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
        # The sweep looks only at unfinished jobs, so the index stays small.
        Index(
            "ix_job_unfinished",
            "status",
            "enqueued_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk(index=False)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[JobStatus] = mapped_column(
        _str_enum(JobStatus, "job_status"), nullable=False, default=JobStatus.QUEUED
    )
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    callback_url: Mapped[str | None] = mapped_column(Text)
    redirect_url: Mapped[str | None] = mapped_column(Text)
    redirect_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The W3C trace context of the request that submitted it (app/tracing.py), so its run joins
    # that trace in whichever worker takes it; NULL while tracing is off.
    traceparent: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tenant: Mapped[Tenant] = relationship()


class Message(Base):
    """One event; its id is the stable ``webhook-id`` every delivery of it carries."""

    __tablename__ = "message"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("job.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    # The exact body that is signed and sent: fixed at creation so retries are byte-identical.
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created_at()
    # The feed's order: the writing transaction, then the place within it (see migration 0008).
    txid: Mapped[int] = mapped_column(
        Xid8(), nullable=False, server_default=text("pg_current_xact_id()")
    )
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), nullable=False)
    # A published event's id, the publisher's own (``POST /v1/events``): publishing it again is
    # a repeat, answered with this message, if ``request_digest`` (SHA-256 of the type and data)
    # matches. NULL for Boomerang's own events.
    event_id: Mapped[str | None] = mapped_column(String(255))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # A published event's channels: a callback listening on channels hears it only if it
    # carries one of them.
    channels: Mapped[list[str]] = mapped_column(
        ARRAY(String(128)), nullable=False, default=list, server_default=text("'{}'")
    )
    # Events sharing a key reach each callback one at a time, in commit order. A job's events
    # are keyed by the job's id.
    ordering_key: Mapped[str | None] = mapped_column(String(255))
    # The W3C trace context it was raised in (a job's run, a request), the parent of each of
    # its delivery attempts' spans; NULL while tracing is off.
    traceparent: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_message_tenant_feed", "tenant_id", "txid", "seq"),
        Index(
            "ix_message_tenant_type",
            "tenant_id",
            "event_type",
            postgresql_ops={"event_type": "text_pattern_ops"},
        ),
        Index(
            "uq_message_tenant_event_id",
            "tenant_id",
            "event_id",
            unique=True,
            postgresql_where=text("event_id IS NOT NULL"),
        ),
    )


class Delivery(Base):
    """One message on its way to one URL."""

    __tablename__ = "delivery"
    __table_args__ = (
        # Only what has a due time: parked deliveries are found through the ordering index
        # below, and a plan looking up a key's pending deliveries must not walk this one whole.
        Index(
            "ix_delivery_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending' AND next_attempt_at IS NOT NULL"),
        ),
        # The log newest first (app/services/deliveries.py), read backwards.
        Index("ix_delivery_tenant_newest", "tenant_id", "created_at", "id"),
        Index("ix_delivery_callback_newest", "callback_id", "created_at", "id"),
        Index(
            "ix_delivery_ordering",
            text("coalesce(callback_id::text, url)"),
            "ordering_key",
            "ordering_seq",
            postgresql_where=text("ordering_key IS NOT NULL"),
        ),
        Index(
            "ix_delivery_ordering_pending",
            text("coalesce(callback_id::text, url)"),
            "ordering_key",
            "ordering_seq",
            postgresql_where=text("ordering_key IS NOT NULL AND status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk(index=False)  # ix_delivery_tenant_newest
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # NULL for an ad-hoc callback URL given on the job, or once the callback is deleted.
    callback_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("callback.id", ondelete="SET NULL")  # ix_delivery_callback_newest
    )
    url: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[DeliveryStatus] = mapped_column(
        _str_enum(DeliveryStatus, "delivery_status"), nullable=False, default=DeliveryStatus.PENDING
    )
    # Attempts made in the current retry run; a manual retry starts a run of one.
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    # The message's key and its place (``message.seq``), copied so the claim can keep a key's
    # deliveries to one lane in order without a join. A keyed delivery waiting behind an earlier
    # one has no ``next_attempt_at`` until that one ends (app/services/ordering.py).
    ordering_key: Mapped[str | None] = mapped_column(String(255))
    ordering_seq: Mapped[int | None] = mapped_column(BigInteger)
    # The earlier messages of the key this lane gave up on since its last success: what the body
    # says, fixed at the first claim so every retry sends the same bytes. NULL: not yet looked.
    preceding_failed: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(UUID(as_uuid=True)))

    message: Mapped[Message] = relationship()
    callback: Mapped[Callback | None] = relationship()
    attempts: Mapped[list[DeliveryAttempt]] = relationship(
        order_by="DeliveryAttempt.attempted_at", back_populates="delivery"
    )


class DeliveryAttempt(Base):
    """One HTTP call and what the receiver answered: the response log."""

    __tablename__ = "delivery_attempt"
    __table_args__ = (
        # Retention drops a whole day at a time, and still prunes the DEFAULT partition by age.
        Index("ix_delivery_attempt_attempted_at", "attempted_at"),
        # One partition per UTC day (app/services/attempt_partitions.py), so retention drops a
        # day's table instead of deleting its rows one by one.
        {"postgresql_partition_by": "RANGE (attempted_at)"},
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("delivery.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Part of the key: Postgres requires a partitioned table's key to hold the partition column.
    attempted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, nullable=False
    )
    request_headers: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    response_body: Mapped[str | None] = mapped_column(Text)
    response_body_truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    succeeded: Mapped[bool] = mapped_column(Boolean, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()

    delivery: Mapped[Delivery] = relationship(back_populates="attempts")


class PortalSession(Base):
    """One portal sign-in. The cookie names it; signing out ends it here, on the server, so a
    copied cookie stops working at once."""

    __tablename__ = "portal_session"

    id: Mapped[uuid.UUID] = _uuid_pk()
    # The key signed in with, or the key that minted the portal link: revoking it ends both.
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_key.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Made from a read-only portal link: pages only, every change refused.
    read_only: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # Made from a portal link rather than by pasting a key.
    from_link: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = _created_at()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PortalLink(Base):
    """A one-time, expiring sign-in URL a tenant's backend minted for one of its people. Only a
    SHA-256 of the token is kept; the URL is shown once."""

    __tablename__ = "portal_link"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_key.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    read_only: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class ReplayStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"


class DeliveryReplay(Base):
    """A bulk re-send of the finished deliveries matching a search, worked through in batches in
    the background (the ``boomerang.replay`` task). It walks the log newest first from where it
    was asked for, so each delivery is re-sent once however long the walk takes."""

    __tablename__ = "delivery_replay"
    __table_args__ = (
        Index(
            "uq_delivery_replay_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "ix_delivery_replay_running",
            "leased_until",
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk(index=False)  # uq_delivery_replay_idempotency_key
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    # The search, as the API took it (app/services/replays.py reads it back).
    search: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[ReplayStatus] = mapped_column(
        _str_enum(ReplayStatus, "replay_status"), nullable=False, default=ReplayStatus.RUNNING
    )
    matched: Mapped[int] = mapped_column(Integer, nullable=False)
    replayed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Where the walk is: the last delivery re-sent (newest first); NULL before the first batch.
    after_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    after_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # A worker holds the replay until then; a later one takes it over (the sweep wakes it).
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ServerSecret(Base):
    """A secret the whole installation shares, made on first use when no setting provides it
    (the portal's session-signing key), so every web process and host signs alike."""

    __tablename__ = "server_secret"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created_at()
