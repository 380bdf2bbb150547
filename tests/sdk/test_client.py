"""The Python client on the real stack (gunicorn, the workers, beat, the stream process and the
front that gives them one origin), with the real receiver taking its callbacks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from boomerang_client import (
    AsyncBoomerang,
    AuthenticationError,
    Boomerang,
    ConflictError,
    InvalidSignatureError,
    NotFoundError,
    ValidationError,
    WaitTimeout,
    new_event,
    verify,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

A_WRONG_SECRET = "whsec_" + base64.b64encode(b"not the secret, not at all.").decode()


@pytest.fixture(scope="module")
def tenant(stack) -> dict[str, str]:
    return stack.create_tenant("sdk")


@pytest.fixture(scope="module")
def boomerang(stack, tenant) -> Iterator[Boomerang]:
    with Boomerang(stack.front_url, tenant["api_key"], timeout=10) as client:
        yield client


def test_it_submits_a_job_whose_signed_callback_verify_accepts(boomerang, tenant, receiver):
    job = boomerang.submit("echo", {"order": 17}, callback_url=receiver.url("/sdk"))

    done = boomerang.wait(job["id"], timeout=20)

    assert done["status"] == "succeeded"
    assert done["result"] == {"order": 17}
    (callback,) = receiver.wait_for(1, "/sdk")
    payload = verify(callback.body, callback.headers, tenant["signing_secret"])
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job["id"]
    with pytest.raises(InvalidSignatureError):
        verify(callback.body.replace(b"17", b"18"), callback.headers, tenant["signing_secret"])
    with pytest.raises(InvalidSignatureError):
        verify(callback.body, callback.headers, A_WRONG_SECRET)
    # During a rotation either secret may be the one that signed.
    assert verify(callback.body, callback.headers, [A_WRONG_SECRET, tenant["signing_secret"]])


@contextlib.contextmanager
def counting(stack, tenant) -> Iterator[tuple[Boomerang, list[httpx.Request]]]:
    """A client over an httpx client of its own, and the requests it sends."""
    sent: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks={"request": [sent.append]}) as http,
        Boomerang(stack.front_url, tenant["api_key"], http_client=http) as boomerang,
    ):
        yield boomerang, sent


def test_it_waits_through_the_long_poll_and_gives_up_at_its_timeout(stack, tenant):
    with counting(stack, tenant) as (boomerang, sent):
        job = boomerang.submit("sleep", {"seconds": 2})

        with pytest.raises(WaitTimeout) as timed_out:
            boomerang.wait(job["id"], timeout=0.5)
        sent.clear()
        done = boomerang.wait(job["id"], timeout=20)

        assert timed_out.value.job["status"] in {"queued", "running"}
        assert done["status"] == "succeeded"
        assert done["result"] == {"slept_seconds": 2.0}
        assert boomerang.get(job["id"]) == done
    # One poll for the state, then one per change (running, two progress steps, the result):
    # polling every tenth of a second would have taken twenty.
    assert len(sent) <= 6, [request.url for request in sent]
    assert all(request.url.path.startswith("/stream/") for request in sent[:-1])


def test_it_streams_a_jobs_events_to_its_result_and_resumes_after_an_event(boomerang):
    job = boomerang.submit("sleep", {"seconds": 2})

    events = list(boomerang.stream(job["id"]))

    assert events[0].type == "job.state"
    assert events[-1].type == "job.succeeded"
    assert events[-1].job["result"] == {"slept_seconds": 2.0}
    assert "job.progress" in [event.type for event in events[1:-1]]
    resumed = list(boomerang.stream(job["id"], last_event_id=events[1].id))
    assert [event.id for event in resumed] == [event.id for event in events[2:]]


def test_it_resumes_a_stream_cut_by_a_killed_stream_process_without_losing_an_event(stack, tenant):
    events = []
    with counting(stack, tenant) as (boomerang, sent):
        job = boomerang.submit("sleep", {"seconds": 3})
        for event in boomerang.stream(job["id"]):
            events.append(event)
            if len(events) == 2:
                stack.stop("stream", sig=signal.SIGKILL)
                stack.start("stream")

    assert len([r for r in sent if r.url.path.endswith("/events")]) >= 2
    assert events[-1].type == "job.succeeded"
    steps = [e.payload["data"]["progress"]["percent"] for e in events if e.type == "job.progress"]
    assert steps == sorted(set(steps)) and steps[-1] == 100, steps
    # Resumed after the last event seen: nothing from before the cut comes again.
    ids = [event.id for event in events if event.type != "job.state"]
    assert len(ids) == len(set(ids))


def test_it_raises_a_validation_error_that_names_the_field(boomerang):
    with pytest.raises(ValidationError) as refused:
        boomerang.submit("no-such-type", {})

    error = refused.value
    assert error.status == error.code == 422
    assert error.message.startswith("Invalid type")
    assert list(error.fields) == ["type"]
    assert error.errors == {"json": {"type": error.fields["type"]}}
    assert error.body["status"] == "Unprocessable Entity"


def test_it_raises_not_found_for_ids_that_are_not_the_tenants(boomerang):
    unknown = uuid.uuid4()

    with pytest.raises(NotFoundError) as missing:
        boomerang.get(unknown)
    with pytest.raises(NotFoundError):
        boomerang.wait(unknown, timeout=1)
    with pytest.raises(NotFoundError):
        list(boomerang.stream(unknown))
    with pytest.raises(NotFoundError):
        boomerang.callbacks.get(unknown)

    assert missing.value.status == 404
    assert missing.value.body["code"] == 404
    assert missing.value.message == "No such job."


def test_it_raises_an_authentication_error_for_a_wrong_key(stack):
    with Boomerang(stack.front_url, "not-a-key") as stranger, pytest.raises(AuthenticationError):
        stranger.list_jobs()


def test_it_returns_the_first_job_for_a_repeated_idempotency_key(boomerang):
    key = f"order-{uuid.uuid4()}"

    first = boomerang.submit("echo", {"n": 1}, idempotency_key=key)
    repeat = boomerang.submit("echo", {"n": 1}, idempotency_key=key)
    with pytest.raises(ConflictError) as conflict:
        boomerang.submit("echo", {"n": 2}, idempotency_key=key)

    assert repeat["id"] == first["id"]
    assert conflict.value.status == 409
    assert first["id"] in [job["id"] for job in boomerang.list_jobs(type="echo")["data"]]


def test_it_manages_a_callback_from_registration_to_deletion(boomerang, receiver):
    created = boomerang.callbacks.create(
        receiver.url("/managed"), event_types=["managed.*"], max_concurrency=2
    )
    callback_id = created["id"]
    assert created["secret"].startswith("whsec_")
    assert callback_id in [callback["id"] for callback in boomerang.callbacks.list()]

    updated = boomerang.callbacks.update(
        callback_id, max_concurrency=None, rate_limit_per_second=5.0, description="sdk"
    )
    assert (updated["max_concurrency"], updated["rate_limit_per_second"]) == (None, 5.0)
    assert boomerang.callbacks.get(callback_id)["description"] == "sdk"

    delivery = boomerang.callbacks.send_test(callback_id)
    (test_event,) = receiver.wait_for(1, "/managed")
    assert delivery["event_type"] == "callback.test"
    assert verify(test_event.body, test_event.headers, created["secret"])["type"] == "callback.test"

    rotated = boomerang.callbacks.rotate_secret(callback_id)
    secrets = boomerang.callbacks.get_secret(callback_id)
    assert secrets["secret"] == rotated["secret"] != created["secret"]
    assert secrets.get("previous_secret") == created["secret"]

    assert boomerang.callbacks.update(callback_id, enabled=False)["enabled"] is False
    assert boomerang.callbacks.enable(callback_id)["enabled"] is True
    assert boomerang.callbacks.recover(callback_id, datetime.now(UTC) - timedelta(hours=1)) == 0

    boomerang.callbacks.delete(callback_id)
    with pytest.raises(NotFoundError):
        boomerang.callbacks.get(callback_id)


def test_it_publishes_events_to_the_callbacks_subscribed_to_their_type(boomerang, receiver):
    boomerang.event_types.create("ledger.paid", schema={"type": "object", "required": ["amount"]})
    callback = boomerang.callbacks.create(receiver.url("/ledger"), event_types=["ledger.*"])

    published = boomerang.publish("ledger.paid", {"amount": 5}, id="pay-1")
    repeat = boomerang.publish("ledger.paid", {"amount": 5}, id="pay-1")
    batch = boomerang.publish_batch(
        [new_event("ledger.paid", {"amount": 1}), new_event("ledger.paid", {"amount": 2})]
    )
    with pytest.raises(ValidationError) as refused:
        boomerang.publish("ledger.paid", {"total": 5})

    assert (published["created"], published["deliveries"]) == (True, 1)
    assert (repeat["created"], repeat["id"]) == (False, published["id"])
    assert [event["created"] for event in batch] == [True, True]
    assert [name for name in refused.value.fields if name.startswith("data")]
    arrived = receiver.wait_for(3, "/ledger")
    amounts = sorted(
        verify(r.body, r.headers, callback["secret"])["data"]["amount"] for r in arrived
    )
    assert amounts == [1, 2, 5]
    assert boomerang.event_types.deprecate("ledger.paid")["deprecated"] is True
    boomerang.callbacks.delete(callback["id"])


def test_it_does_the_same_from_asyncio(stack, tenant, receiver):
    async def scenario() -> None:
        async with AsyncBoomerang(stack.front_url, tenant["api_key"], timeout=10) as client:
            jobs = [
                await client.submit("echo", {"n": n}, callback_url=receiver.url("/async"))
                for n in range(3)
            ]
            # One event loop waits on all of them at once.
            done = await asyncio.gather(*(client.wait(job["id"], timeout=20) for job in jobs))
            assert [job["result"] for job in done] == [{"n": 0}, {"n": 1}, {"n": 2}]

            events = [event async for event in client.stream(jobs[0]["id"])]
            assert [event.type for event in events] == ["job.state", "job.succeeded"]

            key = f"async-{uuid.uuid4()}"
            first = await client.submit("echo", {}, idempotency_key=key)
            assert (await client.submit("echo", {}, idempotency_key=key))["id"] == first["id"]

            with pytest.raises(ValidationError) as refused:
                await client.submit("", {})
            assert "type" in refused.value.fields
            with pytest.raises(NotFoundError):
                await client.wait(uuid.uuid4(), timeout=1)
            with pytest.raises(NotFoundError):
                await client.callbacks.delete(uuid.uuid4())

            created = await client.callbacks.create(receiver.url("/async"), event_types=["a.*"])
            assert (await client.callbacks.get(created["id"]))["url"] == receiver.url("/async")
            await client.callbacks.delete(created["id"])

    asyncio.run(scenario())

    for callback in receiver.wait_for(3, "/async"):
        assert verify(callback.body, callback.headers, tenant["signing_secret"])
