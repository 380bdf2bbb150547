"""Property tests: no spelling of a blocked address is ever allowed by the URL guard."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.url_guard import BlockedUrl, check_callback_url, is_public_unicast

BLOCKED_V4 = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
BLOCKED_V6 = ["::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"]


def addresses_in(cidrs):
    networks = [ipaddress.ip_network(cidr) for cidr in cidrs]
    return st.sampled_from(networks).flatmap(
        lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(
            lambda value: ipaddress.ip_address(value)
        )
    )


def v4_spellings(ip: ipaddress.IPv4Address):
    """The ways a URL can write an IPv4 address that resolvers accept."""
    value = int(ip)
    a, b, c, d = ip.packed
    yield str(ip)
    yield str(value)  # 2130706433
    yield hex(value)  # 0x7f000001
    yield ".".join(f"0{part:o}" for part in ip.packed)  # 0177.0.0.01
    yield ".".join(hex(part) for part in ip.packed)  # 0x7f.0x0.0x0.0x1
    yield f"{a}.{(b << 16) | (c << 8) | d}"  # 127.1
    yield f"{a}.{b}.{(c << 8) | d}"  # 127.0.1
    yield f"{ip}."  # trailing dot
    yield f"[::ffff:{ip}]"  # IPv4-mapped
    yield f"[::{ip}]"  # IPv4-compatible
    yield f"[2002:{a:02x}{b:02x}:{c:02x}{d:02x}::1]"  # 6to4
    yield f"[64:ff9b::{a:02x}{b:02x}:{c:02x}{d:02x}]"  # NAT64


@pytest.fixture(scope="module")
def strict():
    from config.settings import Settings

    return Settings.from_env({})


@hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ip=addresses_in(BLOCKED_V4),
    index=st.integers(0, 11),
    port=st.integers(1, 65535),
    userinfo=st.booleans(),
)
def test_no_spelling_of_a_blocked_ipv4_address_is_allowed(strict, ip, index, port, userinfo):
    spelling = list(v4_spellings(ip))[index]
    prefix = "user@" if userinfo else ""
    with pytest.raises(BlockedUrl):
        check_callback_url(f"http://{prefix}{spelling}:{port}/hook", strict)


@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ip=addresses_in(BLOCKED_V6), upper=st.booleans())
def test_no_blocked_ipv6_address_is_allowed(strict, ip, upper):
    text = ip.exploded.upper() if upper else ip.compressed
    with pytest.raises(BlockedUrl):
        check_callback_url(f"https://[{text}]/hook", strict)


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=st.integers(0, 2**128 - 1))
def test_an_ipv6_address_embedding_a_blocked_ipv4_address_is_never_public(value):
    ip = ipaddress.IPv6Address(value)
    from app.url_guard import embedded_ipv4

    embedded = embedded_ipv4(ip)
    if embedded is not None and not is_public_unicast(embedded):
        assert not is_public_unicast(ip)
