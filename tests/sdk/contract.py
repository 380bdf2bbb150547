"""Where the Python client and the server's OpenAPI document disagree, as readable sentences.

The client declares each operation it makes (``boomerang_client.operations``) with the typed
documents it sends and reads. Held to the document: the method and path exist, with the same
path parameters; every success status it expects is documented; each query parameter it sends
is documented and each required one is sent; each request body it sends has exactly the
document's fields, required where the document requires them (so a new field or a newly
required one is noticed, not only a removed one); and each answer's fields it types exist.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from boomerang_client.operations import Operation


def drift(spec: dict[str, Any], operations: tuple[Operation, ...]) -> list[str]:
    problems: list[str] = []
    for operation in operations:
        problems += operation_drift(spec, operation)
    return problems


def operation_drift(spec: dict[str, Any], op: Operation) -> list[str]:
    name = f"{op.method} {op.path}"
    path_item = spec["paths"].get(op.path)
    documented = (path_item or {}).get(op.method.lower())
    if documented is None:
        return [f"{name}: not in the document"]
    problems: list[str] = []

    parameters = {
        (p["in"], p["name"]): p
        for p in [*path_item.get("parameters", []), *documented.get("parameters", [])]
    }
    in_path = {pname for (where, pname) in parameters if where == "path"}
    placeholders = set(re.findall(r"{(\w+)}", op.path))
    if placeholders != in_path:
        problems.append(f"{name}: path parameters {sorted(placeholders)} != {sorted(in_path)}")

    statuses = {int(status) for status in documented["responses"] if status.isdigit()}
    if not op.success <= statuses:
        problems.append(f"{name}: success {sorted(op.success - statuses)} not documented")

    query = {pname: p for (where, pname), p in parameters.items() if where == "query"}
    sent = keys(op.query)
    if sent - set(query):
        problems.append(f"{name}: query {sorted(sent - set(query))} not documented")
    required = {pname for pname, p in query.items() if p.get("required")}
    if required != required_keys(op.query):
        problems.append(
            f"{name}: required query {sorted(required)} != {sorted(required_keys(op.query))}"
        )

    body = documented.get("requestBody")
    if (op.body is None) != (body is None):
        problems.append(f"{name}: request body sent {op.body is not None}, documented {bool(body)}")
    elif op.body is not None:
        problems += body_drift(spec, name, op.body, json_schema(body))

    if op.response is not None:
        for status in sorted(op.success & statuses):
            answer = documented["responses"][str(status)]
            if "content" not in answer:
                problems.append(f"{name}: {status} documents no body")
                continue
            problems += answer_drift(spec, f"{name} {status}", op.response, json_schema(answer))
    return problems


def body_drift(spec: dict[str, Any], name: str, model: Any, schema: dict[str, Any]) -> list[str]:
    """A request body sends exactly the documented fields, required where they are required."""
    schema = resolve(spec, schema)
    problems: list[str] = []
    fields = set(schema.get("properties", {}))
    if keys(model) != fields:
        problems.append(f"{name}: body fields {sorted(keys(model))} != documented {sorted(fields)}")
    required = set(schema.get("required", []))
    if required_keys(model) != required:
        problems.append(
            f"{name}: required body fields {sorted(required_keys(model))} != {sorted(required)}"
        )
    for field, hint in typing.get_type_hints(model).items():
        nested, item = typed_dict_in(hint)
        if nested is not None and field in schema.get("properties", {}):
            inner = schema["properties"][field]
            problems += body_drift(
                spec, f"{name} {field}", nested, inner["items"] if item else inner
            )
    return problems


def answer_drift(spec: dict[str, Any], name: str, model: Any, schema: dict[str, Any]) -> list[str]:
    """Every field the client types in an answer is one the answer has."""
    schema = resolve(spec, schema)
    problems: list[str] = []
    properties = schema.get("properties", {})
    missing = keys(model) - set(properties)
    if missing:
        problems.append(f"{name}: typed fields {sorted(missing)} are not in the answer")
    for field, hint in typing.get_type_hints(model).items():
        nested, item = typed_dict_in(hint)
        if nested is not None and field in properties:
            inner = properties[field]
            problems += answer_drift(
                spec, f"{name} {field}", nested, inner["items"] if item else inner
            )
    return problems


def keys(model: Any) -> set[str]:
    return set(model.__required_keys__ | model.__optional_keys__) if model else set()


def required_keys(model: Any) -> set[str]:
    return set(model.__required_keys__) if model else set()


def typed_dict_in(hint: Any) -> tuple[Any, bool]:
    """The TypedDict a field holds, and whether it holds a list of them; (None, False) if
    neither."""
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for candidate in candidates:
        if typing.is_typeddict(candidate):
            return candidate, False
        if typing.get_origin(candidate) is list:
            (item,) = typing.get_args(candidate)
            if typing.is_typeddict(item):
                return item, True
    return None, False


def json_schema(content_holder: dict[str, Any]) -> dict[str, Any]:
    return content_holder["content"]["application/json"]["schema"]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema
