"""The OpenAPI document and its browsable docs, both generated from the code."""

from __future__ import annotations

import json


def test_the_openapi_document_is_json_describing_every_route(client):
    response = client.get("/openapi.json")

    assert response.status_code == 200
    spec = json.loads(response.get_data())
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "Boomerang"
    assert set(spec["paths"]["/v1/jobs"]) == {"get", "post"}
    assert {
        "/v1/callbacks",
        "/v1/callbacks/{callback_id}",
        "/v1/callbacks/{callback_id}/rotate-secret",
        "/v1/callbacks/{callback_id}/test",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/deliveries",
        "/v1/deliveries/{delivery_id}",
        "/v1/deliveries/{delivery_id}/retry",
        "/healthz",
        "/readyz",
        "/r/{token}",
    } <= set(spec["paths"])


def test_the_document_declares_bearer_auth_and_exempts_the_public_routes(client):
    spec = client.get("/openapi.json").get_json()

    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert spec["security"] == [{"bearerAuth": []}]
    for path in ("/healthz", "/readyz", "/r/{token}"):
        assert spec["paths"][path]["get"]["security"] == [], path


def test_the_document_states_each_views_success_status(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    assert "201" in paths["/v1/callbacks"]["post"]["responses"]
    assert "202" in paths["/v1/jobs"]["post"]["responses"]
    assert "204" in paths["/v1/callbacks/{callback_id}"]["delete"]["responses"]
    assert "202" in paths["/v1/deliveries/{delivery_id}/retry"]["post"]["responses"]
    assert "required" in json.dumps(paths["/v1/jobs"]["post"]["requestBody"])


def test_the_docs_page_is_swagger_ui_over_the_document(client):
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger-ui" in page
    assert "openapi.json" in page


def test_every_api_operation_documents_its_errors_in_the_one_shape(client):
    spec = client.get("/openapi.json").get_json()
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "status", "message"}
    assert set(error["properties"]) == {"code", "status", "message", "errors"}

    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            expected = {"401", "429"}
            if method in {"post", "put", "patch"}:
                expected |= {"413", "415"}
            if "requestBody" in operation:
                expected |= {"400", "422"}
            assert expected <= set(responses), (method, path, sorted(responses))
            for code in expected - {"422"}:
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
            assert "Retry-After" in responses["429"]["headers"]
            assert "WWW-Authenticate" in responses["401"]["headers"]


def test_views_document_the_errors_of_their_own(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    assert "404" in paths["/v1/callbacks/{callback_id}"]["get"]["responses"]
    assert "404" in paths["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "409" in paths["/v1/jobs"]["post"]["responses"]
    assert {"404", "409"} <= set(paths["/v1/deliveries/{delivery_id}/retry"]["post"]["responses"])
