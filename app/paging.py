"""The one paging cursor: opaque to clients, newest first by ``(created_at, id)``.

Every list that pages (jobs, deliveries; the API and the portal) encodes and decodes its cursor
here, so what a cursor may hold is checked in one place.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session


class BadCursor(ValueError):
    """A cursor this service did not hand out."""


class Pageable(Protocol):
    """A row that pages: its creation time, then its id to break ties."""

    created_at: datetime
    id: uuid.UUID


Row = TypeVar("Row", bound=Pageable)


def encode_cursor(row: Pageable) -> str:
    """An opaque cursor pointing just past ``row`` in newest-first order."""
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Undo ``encode_cursor``; ``BadCursor`` for anything it did not make.

    A cursor comes back from the client, so it is checked like any input: the time must carry
    an offset and is handed on in UTC (Postgres refuses offsets Python accepts, such as +23:59).
    """
    try:
        created, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("no offset")
        return moment.astimezone(UTC), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise BadCursor("not a cursor this service returned") from None


def newest_first_page(
    session: Session, query: Select[Any], model: Any, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """A page of ``query``'s rows of ``model``, newest first, and the cursor of the next page."""
    if cursor:
        created, row_id = decode_cursor(cursor)
        query = query.where(
            or_(model.created_at < created, and_(model.created_at == created, model.id < row_id))
        )
    rows = list(
        session.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1))
    )
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor
