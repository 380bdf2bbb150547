"""Which callback URLs may be called at all: the SSRF rules.

One place for the rules, used at registration (for a clear 422) and again by the outbound client
on the address it is about to connect to, because DNS can answer differently between the two.
An address may be called when it is public unicast -- and so is any IPv4 address embedded in it
-- or when it lies in ``BOOMERANG_ALLOWED_NETWORKS``, or when private networks are allowed.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from urllib.parse import urlsplit

from config.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Prefixes that carry an IPv4 address in their last 32 bits (RFC 6052 NAT64, well-known and
# local-use), so the IPv4 address is what is really reached.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# What a hostname made only of digits, dots and hex looks like: glibc's inet_aton reads such a
# name as an IPv4 address (2130706433, 0177.0.0.1, 0x7f.1, 127.1), so we must too.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*)){0,3}$", re.IGNORECASE)


log = logging.getLogger("boomerang.security")


def announce_network_policy(settings: Settings) -> None:
    """Say loudly, at start-up, when callbacks may reach private networks."""
    if settings.allow_private_networks:
        log.warning(
            "BOOMERANG_ALLOW_PRIVATE_NETWORKS is ON: callbacks may reach loopback, private and "
            "cloud-metadata addresses. Use it for development and tests only."
        )
    elif settings.allowed_networks:
        log.warning(
            "callbacks may reach these non-public networks (BOOMERANG_ALLOWED_NETWORKS): %s",
            ", ".join(str(network) for network in settings.allowed_networks),
        )


class BlockedUrl(ValueError):
    """The URL is malformed or points somewhere deliveries may not go."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in network for network in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d, the deprecated IPv4-compatible form
        return ipaddress.IPv4Address(int(ip))
    return None


def is_public_unicast(ip: IPAddress) -> bool:
    """Globally routable unicast, and so is any IPv4 address it embeds."""
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in network for network in _NAT64):
        # NAT64 lies inside ::/8, which Python calls reserved; what it reaches is the IPv4 part.
        nat64_target = embedded_ipv4(ip)
        return nat64_target is not None and is_public_unicast(nat64_target)
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    embedded = embedded_ipv4(ip)
    return embedded is None or is_public_unicast(embedded)


def check_address(address: str | IPAddress, settings: Settings) -> None:
    """Refuse an IP address deliveries may not reach under these settings."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if settings.allow_private_networks:
        return
    reached = [ip] + ([embedded] if (embedded := embedded_ipv4(ip)) else [])
    for network in settings.allowed_networks:
        if any(
            candidate.version == network.version and candidate in network for candidate in reached
        ):
            return
    if not is_public_unicast(ip):
        raise BlockedUrl(f"{ip} is not a public address")


def normalise_host(host: str) -> str:
    """Lower-case, IDNA-encoded, without trailing dots; IPv4 in any spelling made canonical."""
    host = host.rstrip(".").lower()
    if not host:
        raise BlockedUrl("the URL has no host")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BlockedUrl("the host name is not a valid (IDNA) name") from None
    if _NUMERIC_HOST.match(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            raise BlockedUrl(f"{host!r} is not a valid address") from None
    return host


def check_url_shape(url: str, settings: Settings) -> str:
    """Check scheme, credentials and host without touching DNS; return the normalised host."""
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise BlockedUrl("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- property access raises ValueError on a bad port
    except ValueError as exc:
        raise BlockedUrl(f"not a valid URL: {exc}") from None
    allowed = {"https"} if settings.https_only else {"http", "https"}
    if parts.scheme not in allowed:
        raise BlockedUrl(f"only {' and '.join(sorted(allowed))} URLs are allowed")
    if "@" in parts.netloc:
        raise BlockedUrl("credentials in the URL are not allowed")
    if not parts.hostname:
        raise BlockedUrl("the URL has no host")
    if parts.port == 0:
        raise BlockedUrl("port 0 is not a port anything listens on")
    return normalise_host(parts.hostname)


def literal_ip(host: str) -> IPAddress | None:
    """The host as an IP address, when it is one."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve_host(host: str, port: int, settings: Settings) -> list[str]:
    """Every address ``host`` resolves to, each checked; raise BlockedUrl if any is refused."""
    ip = literal_ip(host)
    if ip is not None:
        check_address(ip, settings)
        return [str(ip)]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedUrl(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    # Refuse the name if any answer is refused: a name that mixes public and private answers is
    # a rebinding attempt, and picking the public one would only hide it.
    for address in addresses:
        check_address(address, settings)
    return addresses


def check_callback_url(url: str, settings: Settings) -> None:
    """Registration-time check: shape always; addresses when the host is a literal or resolves.

    A name that does not resolve yet is accepted: the connect-time check still guards it.
    """
    host = check_url_shape(url, settings)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        resolve_host(host, port, settings)
    except BlockedUrl as exc:
        if "cannot resolve" not in str(exc):
            raise
