"""The SSRF rules: every blocked form is refused at registration (422 naming the field) and at
delivery time (no request reaches the address), and DNS cannot change the answer in between."""

from __future__ import annotations

import socket

import pytest

from app.url_guard import BlockedUrl, check_callback_url
from tests.factories import make_callback, make_delivery
from tests.sending import deliver, post
from workers.delivery.http import ErrorKind, OutboundClient

# Each entry: a URL (with {port} for the local receiver's port) that must be refused.
BLOCKED_URLS = {
    "loopback": "http://127.0.0.1:{port}/hook",
    "loopback other": "http://127.0.0.2:{port}/hook",
    "localhost name": "http://localhost:{port}/hook",
    "localhost trailing dot": "http://localhost.:{port}/hook",
    "loopback trailing dot": "http://127.0.0.1.:{port}/hook",
    "decimal": "http://2130706433:{port}/hook",
    "octal": "http://0177.0.0.1:{port}/hook",
    "hex": "http://0x7f.0.0.1:{port}/hook",
    "hex whole": "http://0x7f000001:{port}/hook",
    "short": "http://127.1:{port}/hook",
    "userinfo": "http://evil.example@127.0.0.1:{port}/hook",
    "userinfo with password": "http://user:pw@127.0.0.1:{port}/hook",
    "private 10/8": "http://10.0.0.1:{port}/hook",
    "private 172.16/12": "http://172.16.5.4:{port}/hook",
    "private 192.168/16": "http://192.168.1.1:{port}/hook",
    "link-local metadata": "http://169.254.169.254/latest/meta-data/",
    "carrier-grade NAT": "http://100.64.0.1:{port}/hook",
    "multicast": "http://224.0.0.1:{port}/hook",
    "reserved": "http://240.0.0.1:{port}/hook",
    "broadcast": "http://255.255.255.255:{port}/hook",
    "unspecified v4": "http://0.0.0.0:{port}/hook",
    "unspecified v6": "http://[::]:{port}/hook",
    "loopback v6": "http://[::1]:{port}/hook",
    "ULA v6": "http://[fd00::1]:{port}/hook",
    "link-local v6": "http://[fe80::1]:{port}/hook",
    "site-local v6": "http://[fec0::1]:{port}/hook",
    "multicast v6": "http://[ff02::1]:{port}/hook",
    "IPv4-mapped loopback": "http://[::ffff:127.0.0.1]:{port}/hook",
    "IPv4-mapped metadata": "http://[::ffff:169.254.169.254]/",
    "IPv4-compatible loopback": "http://[::127.0.0.1]:{port}/hook",
    "6to4 of loopback": "http://[2002:7f00:1::]:{port}/hook",
    "6to4 of private": "http://[2002:c0a8:101::1]:{port}/hook",
    "NAT64 of loopback": "http://[64:ff9b::7f00:1]:{port}/hook",
    "NAT64 of metadata": "http://[64:ff9b::a9fe:a9fe]/",
    # Full-width digits that IDNA folds to 127.0.0.1.
    "IDNA fullwidth digits": "http://１２７.０.０.１:{port}/hook",  # noqa: RUF001
}

BAD_SHAPES = {
    "ftp scheme": "ftp://example.com/x",
    "javascript": "javascript:alert(1)",
    "no host": "http:///path",
    "space in host": "http://exa mple.com/",
    "newline": "http://example.com/\r\nHost: evil",
}


@pytest.fixture
def strict(settings):
    """Production rules: private networks are not allowed."""
    return settings.replace(allow_private_networks=False)


@pytest.mark.parametrize("url", BLOCKED_URLS.values(), ids=BLOCKED_URLS.keys())
def test_the_guard_refuses_every_blocked_form(url, strict):
    with pytest.raises(BlockedUrl):
        check_callback_url(url.format(port=8080), strict)


@pytest.mark.parametrize("url", BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_the_guard_refuses_malformed_urls(url, strict):
    with pytest.raises(BlockedUrl):
        check_callback_url(url, strict)


@pytest.mark.parametrize(
    "url",
    ["https://93.184.216.34/hook", "http://[2606:4700::1111]/", "http://[64:ff9b::808:808]/"],
)
def test_the_guard_allows_public_addresses(url, strict):
    check_callback_url(url, strict)


def test_https_only_refuses_plain_http(strict):
    with pytest.raises(BlockedUrl, match="https"):
        check_callback_url("http://93.184.216.34/", strict.replace(https_only=True))
    check_callback_url("https://93.184.216.34/", strict.replace(https_only=True))


def test_an_allowed_network_may_be_reached_on_purpose(strict):
    import ipaddress

    allowing = strict.replace(allowed_networks=(ipaddress.ip_network("10.1.0.0/16"),))
    check_callback_url("http://10.1.2.3/hook", allowing)
    with pytest.raises(BlockedUrl):
        check_callback_url("http://10.2.0.1/hook", allowing)


@pytest.mark.parametrize("url", BLOCKED_URLS.values(), ids=BLOCKED_URLS.keys())
def test_registration_refuses_every_blocked_form_with_a_422_naming_url(
    url, app, client, auth, db_session, strict
):
    app.extensions["boomerang"].settings = strict
    response = client.post("/v1/callbacks", json={"url": url.format(port=8080)}, headers=auth)
    assert response.status_code == 422, response.get_json()
    assert "url" in response.get_json()["errors"]["json"]


def test_an_ad_hoc_callback_url_is_checked_too(app, client, auth, strict):
    app.extensions["boomerang"].settings = strict
    response = client.post(
        "/v1/jobs", json={"type": "echo", "callback_url": "http://10.0.0.1/x"}, headers=auth
    )
    assert response.status_code == 422
    assert "callback_url" in response.get_json()["errors"]["json"]


# The forms that reach this machine's loopback if the guard let them through: the delivery-time
# tests below then prove it did not, against a real receiver, without ever sending a packet
# anywhere else. Every other form is refused by the same connect-time resolver, tested apart.
LOOPBACK_FORMS = [
    "loopback",
    "localhost name",
    "localhost trailing dot",
    "loopback trailing dot",
    "decimal",
    "octal",
    "hex",
    "hex whole",
    "short",
    "userinfo",
    "userinfo with password",
    "IDNA fullwidth digits",
    "loopback v6",
    "IPv4-mapped loopback",
]


@pytest.mark.parametrize(
    # userinfo forms are refused for their '@' before any host is looked at
    "name",
    [name for name in BLOCKED_URLS if not name.startswith("userinfo")],
)
def test_the_connect_time_resolver_refuses_every_blocked_form(name, strict):
    from urllib.parse import urlsplit

    from app.url_guard import normalise_host, resolve_host

    url = BLOCKED_URLS[name].format(port=8080)
    host = normalise_host(urlsplit(url).hostname or "")
    with pytest.raises(BlockedUrl):
        resolve_host(host, 8080, strict)


@pytest.mark.parametrize("url", [BLOCKED_URLS[name] for name in LOOPBACK_FORMS], ids=LOOPBACK_FORMS)
def test_delivery_time_refuses_every_blocked_form_and_sends_nothing(
    url, db_session, strict, tenant, receiver
):
    # Registered while private networks were allowed, delivered under production rules: the
    # connect-time check is what stops it. The receiver listens on 127.0.0.1 at that port.
    callback = make_callback(db_session, tenant.row, url.format(port=receiver.port))
    delivery = make_delivery(db_session, callback)
    db_session.commit()
    assert deliver(db_session, OutboundClient(strict), strict, delivery.id) is False
    assert receiver.received() == []
    (attempt,) = delivery.attempts if delivery.attempts else _attempts(db_session, delivery.id)
    assert attempt.response_status is None
    assert attempt.error


def _attempts(db_session, delivery_id):
    from app.models import Delivery

    db_session.expire_all()
    return db_session.get(Delivery, delivery_id).attempts


def test_a_name_resolving_to_a_private_address_is_refused_at_connect(strict, monkeypatch, receiver):
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "hooks.example.test":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = receiver.port
    result = post(OutboundClient(strict), f"http://hooks.example.test:{port}/hook", b"{}", {})
    assert result.error_kind == ErrorKind.BLOCKED
    assert "127.0.0.1 is not a public address" in result.error
    assert receiver.received() == []


def test_dns_rebinding_between_check_and_connect_cannot_slip_through(strict, monkeypatch, receiver):
    import ipaddress

    # 127.0.0.2 stands in for a public address (allowed on purpose); nothing listens there.
    # The receiver listens on 127.0.0.1, which is blocked. The name answers 127.0.0.2 first and
    # 127.0.0.1 after: a client that resolved again to connect would reach the receiver.
    allowing = strict.replace(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    real = socket.getaddrinfo
    answers = []

    def rebinding(host, *args, **kwargs):
        if host == "rebind.example.test":
            answers.append(host)
            target = "127.0.0.2" if len(answers) == 1 else "127.0.0.1"
            return real(target, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = receiver.port
    result = post(OutboundClient(allowing), f"http://rebind.example.test:{port}/hook", b"{}", {})

    assert receiver.received() == []
    assert result.status is None
    assert result.error_kind == ErrorKind.CONNECTION  # refused at 127.0.0.2, the checked address
    assert len(answers) == 1


def test_a_registration_check_is_repeated_at_delivery(
    db_session, strict, tenant, monkeypatch, receiver
):
    real = socket.getaddrinfo
    public_then_private = iter(["93.184.216.34", "127.0.0.1"])

    def resolver(host, *args, **kwargs):
        if host == "flip.example.test":
            return real(next(public_then_private), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    url = f"http://flip.example.test:{receiver.port}/hook"
    check_callback_url(url, strict)  # registration: a public answer
    result = post(OutboundClient(strict), url, b"{}", {})  # delivery: now private
    assert result.error_kind == ErrorKind.BLOCKED
    assert receiver.received() == []


def test_a_body_over_the_payload_cap_is_not_sent(settings, receiver):
    small = settings.replace(max_payload_bytes=100)
    result = post(OutboundClient(small), receiver.url("/hook"), b"x" * 101, {})
    assert result.error_kind == ErrorKind.TOO_LARGE
    assert receiver.received() == []


def test_allowing_private_networks_is_announced_loudly_at_start(settings, caplog):
    from app.url_guard import announce_network_policy

    with caplog.at_level("WARNING", logger="boomerang.security"):
        announce_network_policy(settings)
    assert "BOOMERANG_ALLOW_PRIVATE_NETWORKS is ON" in caplog.text
