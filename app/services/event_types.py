"""The catalogue of event types a tenant publishes: names, descriptions, optional JSON Schemas,
and the check every published event passes.

Schemas are JSON Schema Draft 2020-12, checked with jsonschema-rs rather than the pure-Python
``jsonschema``: the tenant writes the schema and our web process runs it, so its regular
expressions must not backtrack for minutes (jsonschema-rs' engine bounds that; Python's ``re``
would hang a web thread on ``^(a+)+$`` against a long string), and a ``$ref`` must never make
the server fetch a URL (every remote reference is refused). It is also many times faster.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jsonschema_rs
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidField, NotFound
from app.events import publishable_problem
from app.models import EventType, Tenant

# A schema is a contract, not a program: this is plenty, and bounds what one validation costs.
MAX_SCHEMA_BYTES = 65_536
MAX_CATALOGUE = 1_000


def _refuse_remote(uri: str) -> Any:
    raise ValueError(f"remote references are not fetched ({uri}); put the definition in $defs")


@lru_cache(maxsize=512)
def _validator(schema_text: str) -> jsonschema_rs.Draft202012Validator:
    """One compiled validator per distinct schema, shared by every request of the process."""
    return jsonschema_rs.Draft202012Validator(json.loads(schema_text), retriever=_refuse_remote)


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def checked_schema(schema: Any) -> dict[str, Any] | None:
    """A schema as given, once it is a valid Draft 2020-12 schema that compiles here; or a 422
    naming ``schema``."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise InvalidField("json", "schema", "must be a JSON Schema object (Draft 2020-12)")
    text = _schema_text(schema)
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidField("json", "schema", f"must be at most {MAX_SCHEMA_BYTES} bytes")
    try:
        jsonschema_rs.meta.validate(schema)
        _validator(text)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        raise InvalidField("json", "schema", f"not a valid JSON Schema: {exc}") from None
    return schema


def create_event_type(session: Session, tenant: Tenant, fields: dict[str, Any]) -> EventType:
    """Add a type to the catalogue; 409 if it is there already."""
    name = fields["name"]
    problem = publishable_problem(name)
    if problem:
        raise InvalidField("json", "name", problem)
    if _find(session, tenant, name) is not None:
        raise Conflict(f"Event type {name!r} is in your catalogue already; PATCH it instead.")
    count = session.scalar(
        select(func.count()).select_from(EventType).where(EventType.tenant_id == tenant.id)
    )
    if (count or 0) >= MAX_CATALOGUE:
        raise Conflict(f"Your catalogue holds {MAX_CATALOGUE} types, the most it may.")
    event_type = EventType(
        tenant_id=tenant.id,
        name=name,
        description=fields.get("description") or "",
        schema=checked_schema(fields.get("schema")),
    )
    session.add(event_type)
    session.flush()
    return event_type


def list_event_types(session: Session, tenant: Tenant) -> list[EventType]:
    """The whole catalogue, by name."""
    return list(
        session.scalars(
            select(EventType).where(EventType.tenant_id == tenant.id).order_by(EventType.name)
        )
    )


def get_event_type(session: Session, tenant: Tenant, name: str) -> EventType:
    event_type = _find(session, tenant, name)
    if event_type is None:
        raise NotFound("You have no event type with this name.")
    return event_type


def update_event_type(
    session: Session, tenant: Tenant, name: str, fields: dict[str, Any]
) -> EventType:
    """Change the description and/or the schema (``null`` removes it)."""
    event_type = get_event_type(session, tenant, name)
    if "description" in fields:
        event_type.description = fields["description"] or ""
    if "schema" in fields:
        event_type.schema = checked_schema(fields["schema"])
    session.flush()
    return event_type


def deprecate_event_type(session: Session, tenant: Tenant, name: str, now: datetime) -> EventType:
    """Mark a type deprecated (once; again changes nothing). It is still published and
    delivered."""
    event_type = get_event_type(session, tenant, name)
    if event_type.deprecated_at is None:
        event_type.deprecated_at = now
        session.flush()
    return event_type


def check_published(
    session: Session, tenant: Tenant, event_type: str, data: Any, within: tuple[str, ...] = ()
) -> None:
    """Refuse an event whose type is missing from the catalogue (unless the tenant allows that)
    or whose data fails the type's schema, naming the field and, for the data, where in it."""
    entry = _find(session, tenant, event_type)
    if entry is None:
        if tenant.allow_uncatalogued_event_types:
            return
        raise InvalidField(
            "json",
            "type",
            f"{event_type!r} is not in your event-type catalogue: add it (POST "
            "/v1/event-types), or allow uncatalogued types (PATCH /v1/tenant "
            '{"allow_uncatalogued_event_types": true})',
            within,
        )
    if entry.schema is None:
        return
    error = next(_validator(_schema_text(entry.schema)).iter_errors(data), None)
    if error is not None:
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.instance_path
        )
        raise InvalidField(
            "json",
            "data",
            f"data{where}: {error.message} (the {event_type} schema)",
            within,
        )


def _find(session: Session, tenant: Tenant, name: str) -> EventType | None:
    return session.scalar(
        select(EventType).where(EventType.tenant_id == tenant.id, EventType.name == name)
    )
