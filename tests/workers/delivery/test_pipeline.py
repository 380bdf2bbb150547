"""The delivery pipeline against a real local HTTP receiver."""

from __future__ import annotations

import json
import socket
import ssl
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import uvloop
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app import events
from app.models import Callback, Delivery, DeliveryStatus, Message
from app.services import outbox
from app.services.callbacks import rotate_secret
from tests.factories import make_callback
from tests.sending import deliver, post
from workers.delivery.http import (
    ErrorKind,
    HttpResult,
    OutboundClient,
    _event_loop,
    connection_cause,
)
from workers.delivery.pipeline import cause_class


def publish(db_session, owner, callback=None, url=None, data=None):
    (delivery,) = outbox.publish(
        db_session,
        tenant_id=owner.id,
        event_type=events.JOB_SUCCEEDED,
        data=data or {"id": "job-1", "result": {"ok": True}},
        now=datetime.now(UTC),
        callbacks=[callback] if callback else [],
        extra_urls=[url] if url else [],
    )
    db_session.commit()
    return delivery


def reload(db_session, delivery_id) -> Delivery:
    db_session.expire_all()
    return db_session.scalar(select(Delivery).where(Delivery.id == delivery_id))


def make_due(db_session, delivery_id):
    delivery = reload(db_session, delivery_id)
    delivery.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)
    db_session.commit()


def test_posts_go_out_on_libuvs_loop(settings, receiver):
    # uvloop, not asyncio's own loop: a third less CPU per POST in the delivery processes.
    client = OutboundClient(settings)
    try:
        assert client.submit(receiver.url("/uv"), b"{}", {}).result(10).status == 200
    finally:
        client.close()
    assert isinstance(_event_loop(), uvloop.Loop)


def test_a_standardwebhooks_receiver_verifies_the_signature(
    db_session, settings, owner, receiver, http
):
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback, data={"id": "job-1", "answer": 42})

    assert deliver(db_session, http, settings, delivery.id) is True

    (request,) = receiver.received("/hook")
    payload = Webhook(callback.secret).verify(request.body, request.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"] == {"id": "job-1", "answer": 42}
    assert request.headers["webhook-id"] == f"msg_{delivery.message_id.hex}"
    assert {k.lower(): v for k, v in request.headers.items()}["content-type"] == "application/json"


def test_a_tampered_body_fails_verification(db_session, settings, owner, receiver, http):
    from standardwebhooks.webhooks import WebhookVerificationError

    callback = make_callback(db_session, owner, receiver.url("/hook"))
    deliver(db_session, http, settings, publish(db_session, owner, callback).id)
    (request,) = receiver.received("/hook")
    with pytest.raises(WebhookVerificationError):
        Webhook(callback.secret).verify(request.body.replace(b"true", b"false"), request.headers)


def test_an_ad_hoc_url_is_signed_with_the_tenant_secret(
    db_session, settings, owner, receiver, http
):
    delivery = publish(db_session, owner, url=receiver.url("/adhoc"))
    assert deliver(db_session, http, settings, delivery.id) is True
    (request,) = receiver.received("/adhoc")
    Webhook(owner.signing_secret).verify(request.body, request.headers)


def test_a_rotated_secret_signs_with_both_old_and_new(db_session, settings, owner, receiver, http):
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    old_secret = callback.secret
    rotate_secret(db_session, owner, callback.id, datetime.now(UTC), settings)
    deliver(db_session, http, settings, publish(db_session, owner, callback).id)
    (request,) = receiver.received("/hook")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(request.body, request.headers)
    Webhook(callback.secret).verify(request.body, request.headers)


def test_it_retries_after_a_500_with_the_same_webhook_id(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/hook", 500, 200)
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)

    before = datetime.now(UTC)
    assert deliver(db_session, http, settings, delivery.id) is False
    pending = reload(db_session, delivery.id)
    assert pending.status == DeliveryStatus.PENDING
    assert pending.attempt_count == 1
    assert before + timedelta(seconds=0.9) <= pending.next_attempt_at
    assert pending.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=1.1)

    assert deliver(db_session, http, settings, delivery.id) is None  # not due yet
    make_due(db_session, delivery.id)
    assert deliver(db_session, http, settings, delivery.id) is True

    first, second = receiver.received("/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    done = reload(db_session, delivery.id)
    assert done.status == DeliveryStatus.SUCCEEDED
    assert [a.response_status for a in done.attempts] == [500, 200]


def test_it_fails_the_delivery_when_retries_are_used_up(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/hook", 500)
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    for _ in range(len(settings.retry_schedule) + 1):
        make_due(db_session, delivery.id)
        assert deliver(db_session, http, settings, delivery.id) is False
    failed = reload(db_session, delivery.id)
    assert failed.status == DeliveryStatus.FAILED
    assert failed.next_attempt_at is None
    assert len(failed.attempts) == len(settings.retry_schedule) + 1


def test_a_callbacks_own_retry_schedule_replaces_the_services(
    db_session, settings, owner, receiver, http, client, auth
):
    receiver.answer("/hook", 500)
    callback = make_callback(db_session, owner, receiver.url("/hook"), retry_schedule=[1])
    delivery = publish(db_session, owner, callback)
    before = datetime.now(UTC)
    assert deliver(db_session, http, settings, delivery.id) is False
    waiting = reload(db_session, delivery.id)
    assert waiting.next_attempt_at <= before + timedelta(seconds=3)
    make_due(db_session, delivery.id)
    assert deliver(db_session, http, settings, delivery.id) is False
    failed = reload(db_session, delivery.id)
    assert failed.status == DeliveryStatus.FAILED  # one retry, as its schedule says
    # Sent again by hand, it gets one more attempt, the last of its own schedule.
    assert client.post(f"/v1/deliveries/{delivery.id}/retry", headers=auth).status_code == 202
    assert reload(db_session, delivery.id).attempt_count == 1


@pytest.mark.parametrize("status", [429, 503])
def test_it_honours_retry_after(db_session, settings, owner, receiver, http, status):
    receiver.answer("/hook", status, headers={"Retry-After": "120"})
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    before = datetime.now(UTC)
    assert deliver(db_session, http, settings, delivery.id) is False
    waiting = reload(db_session, delivery.id)
    assert before + timedelta(seconds=119) <= waiting.next_attempt_at
    assert waiting.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=121)


def test_a_410_disables_the_callback_and_ends_the_delivery(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/hook", 410)
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    assert reload(db_session, delivery.id).status == DeliveryStatus.FAILED
    db_session.expire_all()
    gone = db_session.get(Callback, callback.id)
    assert gone.enabled is False
    assert "410" in gone.disabled_reason


def test_a_receiver_can_stop_the_retries_of_one_message_and_nothing_else(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/hook", 500, headers={"Webhook-Delivery": "Abort-Message"})
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    stopped = reload(db_session, delivery.id)
    assert stopped.status == DeliveryStatus.FAILED and stopped.next_attempt_at is None
    (attempt,) = stopped.attempts
    assert "webhook-delivery: abort-message" in attempt.error
    db_session.expire_all()
    assert db_session.get(Callback, callback.id).enabled is True  # the callback goes on
    receiver.answer("/hook", 200)
    later = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, later.id) is True


@pytest.mark.parametrize("status", [200, 500])
def test_a_receiver_can_ask_to_be_disabled(db_session, settings, owner, receiver, http, status):
    receiver.answer("/hook", status, headers={"webhook-delivery": "disable"})
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    deliver(db_session, http, settings, delivery.id)
    assert reload(db_session, delivery.id).next_attempt_at is None
    db_session.expire_all()
    disabled = db_session.get(Callback, callback.id)
    assert disabled.enabled is False
    assert "webhook-delivery: disable" in disabled.disabled_reason


def test_a_receiver_slower_than_the_read_timeout_is_a_failed_attempt(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/slow", 200, delay_seconds=settings.read_timeout_seconds + 1)
    callback = make_callback(db_session, owner, receiver.url("/slow"))
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    (attempt,) = reload(db_session, delivery.id).attempts
    assert attempt.response_status is None
    assert "timed out" in attempt.error.lower() or "timeout" in attempt.error.lower()
    assert attempt.duration_ms >= settings.read_timeout_seconds * 1000 * 0.9


def test_a_redirect_is_not_followed_and_its_location_is_logged(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/moved", 302, headers={"Location": receiver.url("/elsewhere")})
    callback = make_callback(db_session, owner, receiver.url("/moved"))
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    assert receiver.received("/elsewhere") == []
    (attempt,) = reload(db_session, delivery.id).attempts
    assert attempt.response_status == 302
    assert receiver.url("/elsewhere") in attempt.error
    assert attempt.response_headers["Location"] == receiver.url("/elsewhere")


def test_the_success_status_must_match_exactly_when_set(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/classic", 200)
    callback = make_callback(db_session, owner, receiver.url("/classic"), success_status=201)
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    receiver.answer("/classic", 201)
    make_due(db_session, delivery.id)
    assert deliver(db_session, http, settings, delivery.id) is True


def test_the_response_log_keeps_status_headers_body_and_duration(
    db_session, settings, owner, receiver, http
):
    receiver.answer(
        "/hook", 202, headers={"X-Receiver": "yes"}, body=b'{"thanks":1}', delay_seconds=0.2
    )
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    deliver(db_session, http, settings, delivery.id)
    (attempt,) = reload(db_session, delivery.id).attempts
    assert attempt.response_status == 202
    assert attempt.response_headers["X-Receiver"] == "yes"
    assert attempt.response_body == '{"thanks":1}'
    assert attempt.response_body_truncated is False
    # The receiver took 0.2 s to answer: the duration measures the call, not the bookkeeping.
    assert 200 <= attempt.duration_ms < settings.read_timeout_seconds * 1000
    assert attempt.succeeded is True
    assert attempt.request_headers["webhook-signature"] == "<redacted>"
    assert attempt.request_headers["webhook-id"] == f"msg_{delivery.message_id.hex}"


def test_a_huge_response_body_is_truncated_to_the_limit(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/big", 200, body=b"x" * (settings.response_body_limit_bytes * 3))
    callback = make_callback(db_session, owner, receiver.url("/big"))
    delivery = publish(db_session, owner, callback)
    deliver(db_session, http, settings, delivery.id)
    (attempt,) = reload(db_session, delivery.id).attempts
    assert len(attempt.response_body) == settings.response_body_limit_bytes
    assert attempt.response_body_truncated is True


def test_a_refused_connection_is_a_failed_attempt_with_an_error(db_session, settings, owner, http):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    callback = make_callback(db_session, owner, f"http://127.0.0.1:{port}/hook")
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    (attempt,) = reload(db_session, delivery.id).attempts
    assert attempt.response_status is None
    assert attempt.error


def test_a_private_address_is_blocked_unless_allowed(db_session, settings, owner, receiver):
    strict = settings.replace(allow_private_networks=False)
    client = OutboundClient(strict)
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, client, strict, delivery.id) is False
    assert receiver.received() == []
    (attempt,) = reload(db_session, delivery.id).attempts
    assert "not a public address" in attempt.error


def test_a_delivery_leased_by_another_worker_is_not_sent_twice(
    db_session, settings, owner, receiver, http
):
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    held = reload(db_session, delivery.id)
    held.locked_until = datetime.now(UTC) + timedelta(seconds=30)
    held.lease_id = uuid.uuid4()
    db_session.commit()
    assert deliver(db_session, http, settings, delivery.id) is None
    assert receiver.received() == []


def test_a_disabled_callback_fails_its_pending_delivery_without_sending(
    db_session, settings, owner, receiver, http
):
    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    callback.enabled = False
    db_session.commit()
    assert deliver(db_session, http, settings, delivery.id) is None
    assert reload(db_session, delivery.id).status == DeliveryStatus.FAILED
    assert receiver.received() == []


@pytest.mark.parametrize(
    ("answer", "expected_status"),
    [
        ({"headers": {"Content-Type": "text/plain; charset=bogus"}, "body": b"caf\xe9"}, 200),
        ({"body": b"nul \x00 inside"}, 200),
        # A bytes-to-bytes codec is no text encoding: read as UTF-8 rather than fail.
        ({"headers": {"Content-Type": "text/plain; charset=base64"}, "body": b"ok"}, 200),
        # Not valid HTTP: the parser refuses it, so it is a failed attempt, logged with why.
        ({"headers": {"X-Odd": "a\x00b"}}, None),
    ],
    ids=["unknown charset", "NUL in body", "bytes codec charset", "NUL in header"],
)
def test_whatever_the_receiver_answers_the_attempt_is_recorded(
    db_session, settings, owner, receiver, http, answer, expected_status
):
    receiver.answer("/odd", 200, **answer)
    callback = make_callback(db_session, owner, receiver.url("/odd"))
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is (expected_status is not None)
    (attempt,) = reload(db_session, delivery.id).attempts
    assert attempt.response_status == expected_status
    assert "\x00" not in (attempt.response_body or "")
    assert "\x00" not in (attempt.error or "")
    assert expected_status is not None or attempt.error


def test_an_odd_retry_after_falls_back_to_the_schedule(db_session, settings, owner, receiver, http):
    receiver.answer("/odd", 429, headers={"Retry-After": "\u00b2"})
    callback = make_callback(db_session, owner, receiver.url("/odd"))
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    waiting = reload(db_session, delivery.id)
    assert waiting.status == DeliveryStatus.PENDING
    assert waiting.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=2)


def test_retry_after_is_read_whatever_its_case(db_session, settings, owner, receiver, http):
    receiver.answer("/lower", 503, headers={"retry-after": "90"})
    callback = make_callback(db_session, owner, receiver.url("/lower"))
    delivery = publish(db_session, owner, callback)
    before = datetime.now(UTC)
    deliver(db_session, http, settings, delivery.id)
    assert reload(db_session, delivery.id).next_attempt_at >= before + timedelta(seconds=89)


def test_a_trickling_receiver_is_cut_off_at_the_total_timeout(db_session, settings, owner, http):
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while not stop.is_set():  # one byte well inside the read timeout, forever
            try:
                conn.sendall(b"x")
            except OSError:
                break
            time.sleep(settings.read_timeout_seconds / 3)
        conn.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        callback = make_callback(db_session, owner, f"http://127.0.0.1:{server.getsockname()[1]}/")
        delivery = publish(db_session, owner, callback)
        started = time.monotonic()
        assert deliver(db_session, http, settings, delivery.id) is False
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.close()
    (attempt,) = reload(db_session, delivery.id).attempts
    assert "BOOMERANG_TOTAL_TIMEOUT_SECONDS" in attempt.error
    assert settings.total_timeout_seconds <= elapsed < settings.total_timeout_seconds + 2


def test_a_tenant_deleted_while_its_delivery_is_sent_leaves_nothing_to_crash_on(
    db_session, settings, owner, receiver
):
    from app.clock import utcnow
    from app.models import Tenant
    from workers.delivery.pipeline import build_headers, classify
    from workers.delivery.store import claim_deliveries, record_attempts

    callback = make_callback(db_session, owner, receiver.url("/hook"))
    delivery = publish(db_session, owner, callback)
    (claimed,) = claim_deliveries(db_session, utcnow(), settings, limit=1, only=[delivery.id])
    db_session.commit()
    result = post(OutboundClient(settings), claimed.url, claimed.body.encode(), {})
    db_session.delete(db_session.get(Tenant, owner.id))
    db_session.commit()

    record = classify(claimed, build_headers(claimed, utcnow()), result, utcnow(), settings)
    record_attempts(db_session, [(claimed, record)], settings)
    db_session.commit()
    assert reload(db_session, delivery.id) is None


def test_a_stored_header_http_cannot_carry_fails_the_delivery_clearly_and_once(
    db_session, settings, owner, receiver, http
):
    # Only a callback registered before header values were checked can hold one.
    callback = make_callback(
        db_session, owner, receiver.url("/hook"), headers={"X-Token": "a\x01b"}
    )
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    stored = reload(db_session, delivery.id)
    (attempt,) = stored.attempts
    assert "'X-Token' has a value HTTP cannot carry" in attempt.error
    assert stored.status == DeliveryStatus.FAILED  # retrying cannot help: the callback must change
    assert receiver.received("/hook") == []


def test_a_stored_header_name_http_cannot_carry_fails_the_delivery_clearly_and_once(
    db_session, settings, owner, receiver, http
):
    # Only a callback registered while a name could end in a line break can hold one.
    callback = make_callback(db_session, owner, receiver.url("/hook"), headers={"X-Token\n": "a"})
    delivery = publish(db_session, owner, callback)
    assert deliver(db_session, http, settings, delivery.id) is False
    stored = reload(db_session, delivery.id)
    (attempt,) = stored.attempts
    assert "'X-Token\\n' is not a header name HTTP can carry" in attempt.error
    assert stored.status == DeliveryStatus.FAILED
    assert receiver.received("/hook") == []


def test_credentials_in_custom_headers_reach_the_receiver_but_never_the_attempt_log(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/hook", 200)
    headers = {"Cookie": "session=s3cret", "Authorization": "Bearer t0ken", "X-Team": "blue"}
    callback = make_callback(db_session, owner, receiver.url("/hook"), headers=headers)
    delivery = publish(db_session, owner, callback)

    deliver(db_session, http, settings, delivery.id)

    (request,) = receiver.received("/hook")
    assert request.headers["Cookie"] == "session=s3cret"
    assert request.headers["Authorization"] == "Bearer t0ken"
    (attempt,) = reload(db_session, delivery.id).attempts
    assert attempt.request_headers["Cookie"] == "<redacted>"
    assert attempt.request_headers["Authorization"] == "<redacted>"
    assert attempt.request_headers["X-Team"] == "blue"


def exhausted_events(db_session) -> list[dict]:
    db_session.expire_all()
    return [
        json.loads(body)["data"]
        for body in db_session.scalars(
            select(Message.body).where(Message.event_type == events.DELIVERY_EXHAUSTED)
        )
    ]


def test_a_delivery_that_gives_up_tells_the_other_callbacks_why(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/dead", 503, headers={"Set-Cookie": "session=secret", "X-Why": "maintenance"})
    dead = make_callback(db_session, owner, receiver.url("/dead"), retry_schedule=[])
    watcher = make_callback(
        db_session, owner, receiver.url("/ops"), event_types=[events.DELIVERY_EXHAUSTED]
    )
    make_callback(db_session, owner, receiver.url("/jobs"))  # not subscribed to it
    delivery = publish(db_session, owner, dead)

    assert deliver(db_session, http, settings, delivery.id) is False

    (told,) = exhausted_events(db_session)
    assert told["delivery_id"] == str(delivery.id)
    assert told["webhook_id"] == f"msg_{delivery.message_id.hex}"
    assert told["event_type"] == events.JOB_SUCCEEDED
    assert told["callback_id"] == str(dead.id)
    assert told["cause"] == "5xx"
    assert told["attempts"] == 1
    assert told["last_response"]["status"] == 503
    assert told["last_response"]["headers"]["X-Why"] == "maintenance"
    assert told["last_response"]["headers"]["Set-Cookie"] != "session=secret"  # masked
    assert told["last_request"]["headers"]["webhook-signature"] == "<redacted>"
    assert told["portal_url"].endswith(f"/portal/deliveries/{delivery.id}")
    (to_watcher,) = db_session.scalars(
        select(Delivery).where(Delivery.message_id != delivery.message_id)
    ).all()
    assert to_watcher.callback_id == watcher.id


def test_an_exhausted_notice_that_gives_up_is_not_itself_told(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/a", 500)
    receiver.answer("/b", 500)
    first = make_callback(
        db_session, owner, receiver.url("/a"), retry_schedule=[], event_types=["delivery.*"]
    )
    make_callback(
        db_session, owner, receiver.url("/b"), retry_schedule=[], event_types=["delivery.*"]
    )
    delivery = publish(db_session, owner, first)
    assert deliver(db_session, http, settings, delivery.id) is False
    (notice,) = db_session.scalars(
        select(Delivery).where(Delivery.message_id != delivery.message_id)
    ).all()
    # The notice to the second callback fails for good too; nobody is told about that.
    assert deliver(db_session, http, settings, notice.id) is False
    assert len(exhausted_events(db_session)) == 1


@pytest.mark.parametrize(
    ("result", "cause"),
    [
        (HttpResult(301, {}, "", False, 5), "3xx"),
        (HttpResult(404, {}, "", False, 5), "4xx"),
        (HttpResult(200, {}, "", False, 5), "2xx"),  # a callback whose success_status is 201
        (HttpResult(None, None, None, False, 5, "x", ErrorKind.TIMEOUT), "timeout"),
        (HttpResult(None, None, None, False, 5, "x", ErrorKind.CONNECTION, "dns"), "dns"),
        (HttpResult(None, None, None, False, 5, "x", ErrorKind.CONNECTION), "connect"),
        (HttpResult(None, None, None, False, 5, "x", ErrorKind.BLOCKED), "blocked"),
        (HttpResult(None, None, None, False, 5, "x", ErrorKind.TOO_LARGE), "too_large"),
    ],
)
def test_each_failure_has_a_cause_class(result, cause):
    assert cause_class(result) == cause


def test_a_connection_error_says_whether_the_name_the_handshake_or_the_connection_failed():
    key = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)
    assert connection_cause(socket.gaierror(-2, "Name or service not known")) == "dns"
    assert connection_cause(aiohttp.ClientConnectorDNSError(key, OSError(-2, "no"))) == "dns"
    assert connection_cause(ssl.SSLCertVerificationError("bad cert")) == "tls"
    assert connection_cause(ConnectionRefusedError(111, "refused")) == "connect"


def test_a_callback_disabled_by_its_answer_tells_the_others_the_cause_and_the_response(
    db_session, settings, owner, receiver, http
):
    receiver.answer("/retired", 410, body=b"this endpoint is retired")
    retired = make_callback(db_session, owner, receiver.url("/retired"))
    make_callback(db_session, owner, receiver.url("/ops"), event_types=["callback.disabled"])
    delivery = publish(db_session, owner, retired)
    assert deliver(db_session, http, settings, delivery.id) is False
    db_session.expire_all()
    (body,) = db_session.scalars(
        select(Message.body).where(Message.event_type == events.CALLBACK_DISABLED)
    )
    told = json.loads(body)["data"]
    assert told["callback_id"] == str(retired.id)
    assert told["cause"] == "4xx"
    assert told["last_response"]["status"] == 410
    assert told["last_response"]["body"] == "this endpoint is retired"
