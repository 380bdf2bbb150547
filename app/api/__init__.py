"""One flask-smorest blueprint per resource, each module named like its URL."""

from __future__ import annotations

import json
from typing import Any

import flask
import flask_smorest
import marshmallow
from webargs.flaskparser import FlaskParser

from app.schemas import ErrorSchema
from app.web import API_PREFIX, BODY_METHODS


class ArgumentsParser(FlaskParser):
    """webargs' Flask parser, with every undecodable JSON body answered as a 400, and each schema
    class built once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schemas: dict[type[marshmallow.Schema], marshmallow.Schema] = {}

    def _get_schema(self, argmap: Any, req: flask.Request) -> marshmallow.Schema:
        # webargs builds a schema given as a class on every request, and building one copies its
        # declared fields: 4 % of the web's CPU on POST /v1/jobs, which parses two. Loading keeps
        # no state on the instance (marshmallow 4 has no schema context), so one serves all.
        if isinstance(argmap, type) and issubclass(argmap, marshmallow.Schema):
            schema = self._schemas.get(argmap)
            if schema is None:
                schema = self._schemas[argmap] = argmap()
            return schema
        return super()._get_schema(argmap, req)

    def _raw_load_json(self, req: flask.Request) -> Any:
        try:
            return super()._raw_load_json(req)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise  # webargs answers these itself
        except (ValueError, RecursionError) as exc:
            # json.loads refuses a number over 4300 digits with a bare ValueError and deep
            # nesting with a RecursionError; neither is the server's fault.
            # The ignore: webargs annotates the error more narrowly than it handles it.
            self._handle_invalid_json_error(exc, req)  # type: ignore[arg-type]


def error_response_doc(
    description: str, headers: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An OpenAPI response in the one error shape, with the headers it carries."""
    doc: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ErrorSchema}},
    }
    if headers:
        doc["headers"] = headers
    return doc


class Api(flask_smorest.Api):
    """flask-smorest's Api, documenting the one error shape for its own error responses too
    (``default``, and the 422 of ``arguments``)."""

    ERROR_SCHEMA = ErrorSchema


class Blueprint(flask_smorest.Blueprint):
    """The blueprint every resource uses, so all of them parse requests the same way."""

    ARGUMENTS_PARSER = ArgumentsParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if (self.url_prefix or "").startswith(API_PREFIX):
            # flask-smorest builds each operation's document through these callbacks.
            self._prepare_doc_cbks.append(self._prepare_api_errors_doc)

    @staticmethod
    def _prepare_api_errors_doc(
        doc: dict[str, Any], doc_info: dict[str, Any], *, method: str, **_kwargs: Any
    ) -> dict[str, Any]:
        """Document the errors every /v1 operation may answer. They come from hooks shared by all
        views (authentication, the rate limit, the body checks), so they are documented here once;
        a view documents only the errors of its own (404, 409) with ``alt_response``."""
        responses = doc.setdefault("responses", {})
        responses.setdefault(
            401,
            error_response_doc(
                "No valid API key was sent.",
                {
                    "WWW-Authenticate": {
                        "description": "The scheme to authenticate with: Bearer.",
                        "schema": {"type": "string"},
                    }
                },
            ),
        )
        responses.setdefault(
            429,
            error_response_doc(
                "The tenant's rate limit is used up.",
                {
                    "Retry-After": {
                        "description": "Seconds until requests are accepted again.",
                        "schema": {"type": "integer", "minimum": 1},
                    }
                },
            ),
        )
        if method.upper() in BODY_METHODS:
            responses.setdefault(413, error_response_doc("The body is over the size limit."))
            responses.setdefault(
                415, error_response_doc("A body was sent that is not application/json.")
            )
        if "requestBody" in doc:
            responses.setdefault(400, error_response_doc("The body is not valid JSON."))
        return doc
