"""Fuzz every operation in the app's own OpenAPI document, in-process: no request may end in a
5xx, and every answer must be one the document declares, with the body it declares."""

from __future__ import annotations

from collections import Counter
from functools import partial

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from app.models import ApiKey
from tests.factories import make_api_key, make_callback, make_delivery, make_job

# Per operation and mode. All ~25 operations x 3 modes took about 2.5 minutes on two cores in
# one test, so they are split into this many tests, each a share of the operations, which
# parallel test processes fuzz side by side.
MAX_EXAMPLES = 30
SHARDS = 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # no example database: every run explores afresh
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.filter_too_much,
        hypothesis.HealthCheck.data_too_large,
    ],
)


def fuzz(operation, mode, count, db_session, auth, path_parameters=None) -> None:
    """Send up to ``MAX_EXAMPLES`` generated requests to ``operation``; raise the first failure."""

    @SETTINGS
    @hypothesis.given(case=operation.as_strategy(mode, path_parameters=path_parameters))
    def run(case):
        count()
        # Commit the setup (the tenant and its key) as the shared client does, or the request's
        # teardown would roll it back.
        db_session.commit()
        response = case.call(headers=auth)
        case.validate_response(response, checks=CHECKS, headers=auth)

    run()


def existing_ids(db_session, owner) -> dict[str, str]:
    """Ids of real rows of the tenant, by path parameter name, so that requests get past the 404
    and the success answers are checked too."""
    callback = make_callback(db_session, owner, "http://127.0.0.1:9/hook")
    job = make_job(
        db_session, owner, redirect_url="http://127.0.0.1:9/done", redirect_token="fuzz-token"
    )
    delivery = make_delivery(db_session, callback, job_id=job.id)
    # A spare key to revoke: revoking the one the requests are made with would end the run.
    spare_prefix = make_api_key(db_session, owner).partition(".")[0]
    spare_key_id = db_session.scalar(select(ApiKey.id).where(ApiKey.prefix == spare_prefix))
    return {
        "callback_id": str(callback.id),
        "job_id": str(job.id),
        "delivery_id": str(delivery.id),
        "key_id": str(spare_key_id),
        "token": "fuzz-token",
    }


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_operation_answers_generated_requests_as_documented(
    app, auth, owner, db_session, shard
):
    # The schema is read from the app itself, and requests go to it through WSGI: no network.
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    ids = existing_ids(db_session, owner)
    examples: Counter[str] = Counter()
    failures: dict[str, BaseException] = {}

    every = [result.ok() for result in schema.get_all_operations()]
    operations = every[shard::SHARDS]
    assert operations, f"no operation in shard {shard} of {len(every)}"
    # Deletes last, so the other operations still find the rows they are given.
    for operation in sorted(operations, key=lambda operation: operation.method.upper() == "DELETE"):
        # Positive cases reach the views; negative ones (wrong types, missing fields, bad ids)
        # exercise the input checks. An operation without inputs has no negative cases.
        modes = [GenerationMode.POSITIVE]
        if operation.path_parameters or operation.query or operation.body:
            modes.append(GenerationMode.NEGATIVE)
        runs = [(mode.value, mode, None) for mode in modes]
        names = [parameter.name for parameter in operation.path_parameters]
        if names and all(name in ids for name in names):
            known = {name: ids[name] for name in names}
            runs.append(("existing ids", GenerationMode.POSITIVE, known))
        for name, mode, path_parameters in runs:
            label = f"{operation.label} ({name})"
            count = partial(examples.update, [label])
            try:
                fuzz(operation, mode, count, db_session, auth, path_parameters)
            except hypothesis.errors.Unsatisfiable:
                # Every value is valid (e.g. the free-form /r/{token}): no negative case exists.
                assert mode is GenerationMode.NEGATIVE, label
            except Exception as exc:
                failures[label] = exc

    fuzzed = {label.rpartition(" (")[0] for label in examples}
    print(f"fuzzed {len(fuzzed)} operations with {sum(examples.values())} examples")
    assert len(fuzzed) == len(operations), sorted(fuzzed)
    assert not failures, "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())
