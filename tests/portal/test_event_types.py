"""The portal's catalogue of event types: add, edit, deprecate, through the API's service."""

from __future__ import annotations

import json

from sqlalchemy import select

from app.models import EventType

SCHEMA = {"type": "object", "required": ["amount"]}


def stored(db_session) -> dict[str, EventType]:
    db_session.expire_all()
    return {row.name: row for row in db_session.scalars(select(EventType))}


def add(portal, **fields):
    return portal.post("/portal/event-types", fields, page="/portal/event-types")


def test_it_adds_edits_and_deprecates_a_type(signed_in, db_session):
    assert "No event types yet." in signed_in.text("/portal/event-types")
    response = add(
        signed_in, name="invoice.paid", description="Paid in full.", schema=json.dumps(SCHEMA)
    )
    assert response.status_code == 303
    (paid,) = stored(db_session).values()
    assert (paid.name, paid.description, paid.schema) == ("invoice.paid", "Paid in full.", SCHEMA)
    page = signed_in.text("/portal/event-types")
    assert "<code>invoice.paid</code>" in page and "Paid in full." in page

    form = signed_in.text("/portal/event-types/invoice.paid/edit")
    assert "&#34;amount&#34;" in form  # the schema, shown to edit
    saved = signed_in.post(
        "/portal/event-types/invoice.paid/edit",
        {"description": "Paid.", "schema": ""},
        page="/portal/event-types/invoice.paid/edit",
    )
    assert saved.status_code == 303
    assert (
        stored(db_session)["invoice.paid"].description,
        stored(db_session)["invoice.paid"].schema,
    ) == ("Paid.", None)

    deprecated = signed_in.post(
        "/portal/event-types/invoice.paid/deprecate", page="/portal/event-types"
    )
    assert deprecated.status_code == 303
    assert stored(db_session)["invoice.paid"].deprecated_at is not None
    assert "deprecated" in signed_in.text("/portal/event-types")


def test_it_refuses_what_the_api_refuses_naming_the_field(signed_in, db_session):
    for fields, field in [
        ({"name": "job.done"}, "name"),
        ({"name": "Bad Name"}, "name"),
        ({"name": "a.b", "schema": "{not json"}, "schema"),
        ({"name": "a.b", "schema": '{"type": "objectx"}'}, "schema"),
    ]:
        response = add(signed_in, **fields)
        assert response.status_code == 422, fields
        page = response.get_data(as_text=True)
        assert f'id="{field}-error"' in page
        assert "Nothing was saved" in page
    add(signed_in, name="a.b")
    again = add(signed_in, name="a.b")
    assert again.status_code == 409
    assert "in your catalogue already" in again.get_data(as_text=True)
    assert list(stored(db_session)) == ["a.b"]


def test_another_tenants_types_are_not_found(signed_in, db_session, other_tenant):
    db_session.add(EventType(tenant_id=other_tenant.row.id, name="secret.thing"))
    db_session.commit()
    assert "secret.thing" not in signed_in.text("/portal/event-types")
    assert signed_in.client.get("/portal/event-types/secret.thing/edit").status_code == 404
