"""The one paging cursor: opaque to clients, and checked like any input when it comes back."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import hypothesis
import pytest
from hypothesis import strategies as st

from app.paging import BadCursor, decode_cursor

ROW = uuid.UUID("6f0c2a1e-0000-4000-8000-000000000001")


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode()


def test_a_cursor_with_a_large_offset_is_read_in_utc():
    moment, row = decode_cursor(cursor_of(f"2026-12-01T00:00:00+23:59|{ROW}"))
    assert moment == datetime(2026, 11, 30, 0, 1, tzinfo=UTC)
    assert moment.utcoffset().total_seconds() == 0
    assert row == ROW


@pytest.mark.parametrize(
    "raw",
    [
        f"2026-12-01T00:00:00|{ROW}",  # no offset: which moment would it be?
        f"0001-01-01T00:00:00+23:59|{ROW}",  # before the first UTC year
        "2026-12-01T00:00:00+00:00|not-a-uuid",
        "nonsense",
    ],
)
def test_a_cursor_this_service_did_not_make_is_refused(raw):
    with pytest.raises(BadCursor):
        decode_cursor(cursor_of(raw))


TAMPERED = cursor_of(f"2026-12-01T00:00:00+23:59|{ROW}")


def test_the_api_answers_a_tampered_cursor_with_422_not_500(client, auth):
    too_far = cursor_of(f"0001-01-01T00:00:00+23:59|{ROW}")
    assert (
        client.get("/v1/jobs", query_string={"cursor": TAMPERED}, headers=auth).status_code == 200
    )
    response = client.get("/v1/jobs", query_string={"cursor": too_far}, headers=auth)
    assert response.status_code == 422
    assert "cursor" in response.get_json()["errors"]["query"]


@hypothesis.settings(
    max_examples=150,
    deadline=None,
    database=None,
    # The client and key stay the same for every example: each request is independent.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    moment=st.datetimes(timezones=st.timezones() | st.none())
    | st.text(max_size=40).map(lambda text: text),
    offset_minutes=st.integers(min_value=-1439, max_value=1439),
    row=st.uuids() | st.text(max_size=40),
)
def test_no_cursor_makes_a_list_answer_500(client, auth, moment, offset_minutes, row):
    if isinstance(moment, datetime):
        sign = "+" if offset_minutes >= 0 else "-"
        hours, minutes = divmod(abs(offset_minutes), 60)
        text = moment.replace(tzinfo=None).isoformat() + f"{sign}{hours:02d}:{minutes:02d}"
    else:
        text = moment
    cursor = cursor_of(f"{text}|{row}")
    response = client.get("/v1/jobs", query_string={"cursor": cursor}, headers=auth)
    assert response.status_code in (200, 422)
    response = client.get("/v1/jobs", query_string={"cursor": text}, headers=auth)
    assert response.status_code in (200, 422)
