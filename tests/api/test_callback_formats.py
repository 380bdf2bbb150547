"""/v1/callbacks: choosing a body format, pinned to a version at registration."""

from __future__ import annotations

import pytest

from app import formats
from app.formats import Rendered
from app.models import Callback
from tests.conftest import error_fields

URL = "http://127.0.0.1:9/hook"


def register(client, auth, **body):
    response = client.post("/v1/callbacks", json={"url": URL, **body}, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def patch(client, auth, callback_id, **body):
    return client.patch(f"/v1/callbacks/{callback_id}", json=body, headers=auth)


@pytest.fixture
def cloudevents_v2(monkeypatch):
    """A second CloudEvents version, released for the length of one test."""

    def render(message) -> Rendered:
        return Rendered("{}", "application/cloudevents+json")

    monkeypatch.setitem(formats.RENDERERS, ("cloudevents", 2), render)


def test_a_callback_gets_the_envelope_v1_unless_it_asks_otherwise(client, auth):
    body = register(client, auth)
    assert (body["format"], body["format_version"]) == ("envelope", 1)


def test_a_callback_can_choose_cloudevents(client, auth, db_session):
    body = register(client, auth, format="cloudevents")

    assert (body["format"], body["format_version"]) == ("cloudevents", 1)
    stored = db_session.get(Callback, body["id"])
    assert (stored.format, stored.format_version) == ("cloudevents", 1)
    shown = client.get(f"/v1/callbacks/{body['id']}", headers=auth).get_json()
    assert (shown["format"], shown["format_version"]) == ("cloudevents", 1)
    listed = client.get("/v1/callbacks", headers=auth).get_json()["data"]
    assert [(c["format"], c["format_version"]) for c in listed] == [("cloudevents", 1)]


def test_registering_pins_the_newest_version(client, auth, cloudevents_v2):
    body = register(client, auth, format="cloudevents")
    assert body["format_version"] == 2


def test_an_older_version_can_be_asked_for(client, auth, cloudevents_v2):
    body = register(client, auth, format="cloudevents", format_version=1)
    assert body["format_version"] == 1


def test_a_registered_callback_keeps_its_version_when_a_new_one_is_released(
    client, auth, monkeypatch
):
    before = register(client, auth, format="cloudevents")
    monkeypatch.setitem(formats.RENDERERS, ("cloudevents", 2), lambda m: Rendered("", ""))

    shown = client.get(f"/v1/callbacks/{before['id']}", headers=auth).get_json()
    assert shown["format_version"] == 1
    newer = register(client, auth, url=f"{URL}/newer", format="cloudevents")
    assert newer["format_version"] == 2


def test_an_unknown_format_is_refused_naming_the_field(client, auth):
    response = client.post("/v1/callbacks", json={"url": URL, "format": "xml"}, headers=auth)

    assert response.status_code == 422
    assert "format" in error_fields(response)


@pytest.mark.parametrize("version", [2, 99])
def test_an_unreleased_version_is_refused_naming_the_field(client, auth, version):
    response = client.post(
        "/v1/callbacks",
        json={"url": URL, "format": "cloudevents", "format_version": version},
        headers=auth,
    )

    assert response.status_code == 422
    assert error_fields(response) == {
        "format_version": [f"cloudevents has no version {version}; released versions: 1"]
    }


@pytest.mark.parametrize("version", [0, -1, "one", None, 1.5])
def test_a_version_that_is_not_a_positive_whole_number_is_refused(client, auth, version):
    response = client.post(
        "/v1/callbacks", json={"url": URL, "format_version": version}, headers=auth
    )

    assert response.status_code == 422
    assert "format_version" in error_fields(response)


def test_a_null_format_is_refused(client, auth):
    response = client.post("/v1/callbacks", json={"url": URL, "format": None}, headers=auth)
    assert response.status_code == 422
    assert "format" in error_fields(response)


def test_changing_the_format_pins_the_new_formats_newest_version(client, auth, cloudevents_v2):
    callback = register(client, auth)

    response = patch(client, auth, callback["id"], format="cloudevents")

    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["format"], response.get_json()["format_version"]) == (
        "cloudevents",
        2,
    )


def test_naming_the_same_format_again_keeps_the_pin(client, auth, monkeypatch):
    callback = register(client, auth, format="cloudevents")
    monkeypatch.setitem(formats.RENDERERS, ("cloudevents", 2), lambda m: Rendered("", ""))

    response = patch(client, auth, callback["id"], format="cloudevents", description="kept")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["format_version"] == 1
    assert response.get_json()["description"] == "kept"


def test_a_version_alone_repins_the_current_format(client, auth, cloudevents_v2):
    callback = register(client, auth, format="cloudevents", format_version=1)

    response = patch(client, auth, callback["id"], format_version=2)

    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["format"], response.get_json()["format_version"]) == (
        "cloudevents",
        2,
    )


def test_a_change_to_an_unreleased_version_is_refused_and_changes_nothing(client, auth, db_session):
    callback = register(client, auth, format="cloudevents")

    response = patch(client, auth, callback["id"], format="envelope", format_version=3)

    assert response.status_code == 422
    assert error_fields(response) == {
        "format_version": ["envelope has no version 3; released versions: 1"]
    }
    db_session.expire_all()
    stored = db_session.get(Callback, callback["id"])
    assert (stored.format, stored.format_version) == ("cloudevents", 1)


def test_a_change_to_an_unknown_format_is_refused(client, auth):
    callback = register(client, auth)
    response = patch(client, auth, callback["id"], format="soap")
    assert response.status_code == 422
    assert "format" in error_fields(response)


def test_the_openapi_document_offers_the_formats(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]

    assert schemas["CallbackCreate"]["properties"]["format"]["enum"] == ["envelope", "cloudevents"]
    assert schemas["CallbackCreate"]["properties"]["format_version"]["minimum"] == 1
    assert schemas["CallbackUpdate"]["properties"]["format"]["enum"] == ["envelope", "cloudevents"]
    assert {"format", "format_version"} <= set(schemas["Callback"]["properties"])
