"""/v1/event-types: the catalogue, and what publishing checks against it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models import Message
from tests.conftest import error_fields

AMOUNT_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
    },
    "required": ["amount"],
}


def add_type(client, auth, **fields):
    return client.post("/v1/event-types", json=fields, headers=auth)


def test_a_type_is_added_listed_read_changed_and_deprecated(client, auth):
    created = add_type(client, auth, name="invoice.paid", description="An invoice was paid.")
    assert created.status_code == 201, created.text
    assert created.json["schema"] is None and created.json["deprecated"] is False
    add_type(client, auth, name="invoice.created")

    listed = client.get("/v1/event-types", headers=auth).json["data"]
    assert [t["name"] for t in listed] == ["invoice.created", "invoice.paid"]
    assert client.get("/v1/event-types/invoice.paid", headers=auth).json["description"] == (
        "An invoice was paid."
    )
    changed = client.patch(
        "/v1/event-types/invoice.paid", json={"schema": AMOUNT_SCHEMA}, headers=auth
    )
    assert changed.status_code == 200 and changed.json["schema"] == AMOUNT_SCHEMA
    deprecated = client.post("/v1/event-types/invoice.paid/deprecate", headers=auth)
    again = client.post("/v1/event-types/invoice.paid/deprecate", headers=auth)
    assert deprecated.json["deprecated"] is True
    assert again.json["deprecated_at"] == deprecated.json["deprecated_at"]
    cleared = client.patch("/v1/event-types/invoice.paid", json={"schema": None}, headers=auth)
    assert cleared.json["schema"] is None


def test_a_type_is_added_once_and_is_the_tenants_own(client, auth, other_auth):
    assert add_type(client, auth, name="user.created").status_code == 201
    assert add_type(client, auth, name="user.created").status_code == 409
    # Another tenant has a catalogue of its own: the same name is free there, this one unseen.
    assert client.get("/v1/event-types/user.created", headers=other_auth).status_code == 404
    assert client.get("/v1/event-types", headers=other_auth).json["data"] == []
    assert add_type(client, other_auth, name="user.created").status_code == 201
    for method, path in [
        ("patch", "/v1/event-types/nope.nope"),
        ("post", "/v1/event-types/nope.nope/deprecate"),
        ("get", "/v1/event-types/nope.nope"),
    ]:
        kwargs = {"json": {"description": "x"}} if method == "patch" else {}
        assert getattr(client, method)(path, headers=auth, **kwargs).status_code == 404


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "job.succeeded"}, "name"),
        ({"name": "Invoice"}, "name"),
        ({"name": "invoice.*"}, "name"),
        ({"name": "a.b", "schema": {"type": "objectx"}}, "schema"),
        ({"name": "a.b", "schema": ["not", "an", "object"]}, "schema"),
        ({"name": "a.b", "schema": {"$ref": "http://127.0.0.1:9/schema.json"}}, "schema"),
        ({"name": "a.b", "schema": {"description": "x" * 70_000}}, "schema"),
        ({"name": "a.b", "colour": "red"}, "colour"),
    ],
)
def test_bad_types_are_refused_naming_the_field(client, auth, fields, field):
    response = add_type(client, auth, **fields)
    assert response.status_code == 422, response.text
    assert field in error_fields(response)


def test_only_catalogued_types_are_published_unless_the_tenant_allows_any(client, auth, db_session):
    refused = client.post("/v1/events", json={"type": "order.placed", "data": {}}, headers=auth)
    assert refused.status_code == 422
    (message,) = error_fields(refused)["type"]
    assert "catalogue" in message and "allow_uncatalogued_event_types" in message

    add_type(client, auth, name="order.placed")
    assert (
        client.post(
            "/v1/events", json={"type": "order.placed", "data": {}}, headers=auth
        ).status_code
        == 202
    )

    allowed = client.patch(
        "/v1/tenant", json={"allow_uncatalogued_event_types": True}, headers=auth
    )
    assert allowed.json["allow_uncatalogued_event_types"] is True
    assert (
        client.post(
            "/v1/events", json={"type": "order.shipped", "data": {}}, headers=auth
        ).status_code
        == 202
    )
    assert db_session.scalar(select(func.count()).select_from(Message)) == 2


def test_published_data_must_meet_the_types_schema_and_errors_say_where(client, auth, db_session):
    add_type(client, auth, name="invoice.paid", schema=AMOUNT_SCHEMA)
    good = {"amount": 12.5, "lines": [{"sku": "a"}]}
    cases = {
        "negative": ({"amount": -1}, "data.amount"),
        "missing": ({"lines": []}, "data:"),
        "nested": ({"amount": 1, "lines": [{"sku": "a"}, {"qty": 2}]}, "data.lines[1]"),
        "not an object": ([1, 2], "data:"),
    }
    for name, (data, where) in cases.items():
        response = client.post(
            "/v1/events", json={"type": "invoice.paid", "data": data}, headers=auth
        )
        assert response.status_code == 422, name
        (message,) = error_fields(response)["data"]
        assert message.startswith(where), (name, message)
    assert (
        client.post(
            "/v1/events", json={"type": "invoice.paid", "data": good}, headers=auth
        ).status_code
        == 202
    )

    # In a batch, the error names the event; none of the batch is stored.
    batch = client.post(
        "/v1/events:batch",
        json={
            "events": [
                {"type": "invoice.paid", "data": good},
                {"type": "invoice.paid", "data": {"amount": "12"}},
            ]
        },
        headers=auth,
    )
    assert batch.status_code == 422
    assert "data" in error_fields(batch)["events"]["1"]
    assert db_session.scalar(select(func.count()).select_from(Message)) == 1


def test_a_deprecated_type_is_still_published(client, auth):
    add_type(client, auth, name="legacy.thing")
    client.post("/v1/event-types/legacy.thing/deprecate", headers=auth)
    response = client.post("/v1/events", json={"type": "legacy.thing", "data": 1}, headers=auth)
    assert response.status_code == 202


def test_a_backtracking_pattern_cannot_stall_the_check(client, auth):
    add_type(
        client,
        auth,
        name="text.sent",
        schema={"type": "object", "properties": {"t": {"type": "string", "pattern": "^(a+)+$"}}},
    )
    response = client.post(
        "/v1/events", json={"type": "text.sent", "data": {"t": "a" * 100_000 + "!"}}, headers=auth
    )
    assert response.status_code == 422
