"""Which callback URLs may be called at all.

One place for the rule, used at registration (for a clear 422) and again by the outbound client
just before it connects, because DNS can change between the two.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from config.settings import Settings


class BlockedUrl(ValueError):
    """The URL is malformed or points somewhere deliveries may not go."""


def check_url_shape(url: str) -> str:
    """Check scheme and host without touching DNS; return the hostname."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- property access raises ValueError on a bad port
    except ValueError as exc:
        raise BlockedUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise BlockedUrl("only http and https URLs are allowed")
    if not parts.hostname:
        raise BlockedUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise BlockedUrl("credentials in the URL are not allowed")
    return parts.hostname


def check_address(address: str, settings: Settings) -> None:
    """Refuse an IP address that is not public unicast, unless private networks are allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if settings.allow_private_networks:
        return
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_global or ip.is_multicast:
        raise BlockedUrl(f"{ip} is not a public address")


def resolve_and_check(url: str, settings: Settings) -> list[str]:
    """Resolve the URL's host and check every address it resolves to; return them."""
    host = check_url_shape(url)
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedUrl(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        check_address(address, settings)
    return addresses


def check_callback_url(url: str, settings: Settings) -> None:
    """Registration-time check: shape always; addresses when the host is a literal or resolves."""
    host = check_url_shape(url)
    try:
        check_address(host.strip("[]"), settings)
        return
    except ValueError as exc:
        if isinstance(exc, BlockedUrl):
            raise
    try:
        resolve_and_check(url, settings)
    except BlockedUrl as exc:
        # A name that does not resolve yet may later; the delivery-time check still guards it.
        if "cannot resolve" not in str(exc):
            raise
