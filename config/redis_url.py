"""What ``REDIS_URL`` names: one Redis server, or a primary that Redis Sentinel watches.

A plain server is ``redis://`` or ``rediss://``, as redis-py reads it. A primary behind Sentinel is
one URL naming every sentinel and the primary's name::

    sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379[/db]?master=mymaster

One URL rather than kombu's ``sentinel://h1:26379;sentinel://h2:26379`` plus a separate setting
for the name: the whole Redis address then stays in the one variable every process already reads,
and switching a deployment to Sentinel changes that variable only. The user and password are the
primary's (and its replicas'); the sentinels are asked without them. A sentinel without a port is
on 26379, and ``db`` is 0 unless given.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_FORM = "sentinel://[[user]:password@]host:port[,host:port...][/db]?master=NAME"


@dataclass(frozen=True)
class SentinelTarget:
    """The sentinels to ask, and which primary of theirs to use."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a primary behind Sentinel rather than one server."""
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_redis_url(raw: str) -> str:
    """The settings parser: a redis, rediss or sentinel URL, else ValueError saying why."""
    if is_sentinel_url(raw):
        parse_sentinel_url(raw)
        return raw
    parts = urlsplit(raw)
    if parts.scheme not in {"redis", "rediss"} or not (parts.hostname or parts.path):
        raise ValueError(f"expected a redis:// or rediss:// URL, or {SENTINEL_FORM}")
    return raw


def parse_sentinel_url(raw: str) -> SentinelTarget:
    """Read a ``sentinel://`` URL; ValueError names what is wrong with it."""
    # urlsplit cannot read a comma-separated host list (``.port`` would fail), so the network
    # location is taken apart here; the path and query are ordinary.
    try:
        parts = urlsplit(raw)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
        raise ValueError(f"{exc}: {SENTINEL_FORM}") from None
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"expected {SENTINEL_FORM}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    sentinels = tuple(_host_port(part.strip()) for part in hosts.split(","))
    return SentinelTarget(
        sentinels=sentinels,
        master_name=_master_name(parts.query),
        db=_db(parts.path),
        username=username,
        password=password,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    if not colon:
        raise ValueError(f"a password goes after a colon: {SENTINEL_FORM}")
    return unquote(user) or None, unquote(password) or None


def _host_port(part: str) -> tuple[str, int]:
    if part.startswith("["):  # an IPv6 address, e.g. [::1]:26379
        host, bracket, rest = part[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"sentinel {part!r} is not [address]:port")
        port = rest[1:]
    else:
        host, _, port = part.partition(":")
    if not host:
        raise ValueError(f"expected at least one sentinel host: {SENTINEL_FORM}")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"sentinel {part!r} has no valid port (1 to 65535)")
    return host, int(port)


def _master_name(query: str) -> str:
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"cannot read the query {query!r}: {SENTINEL_FORM}") from None
    unknown = sorted(set(options) - {"master"})
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; only master= is read")
    names = options.get("master", [])
    if len(names) != 1 or not names[0].strip():
        raise ValueError(f"expected the primary's name as ?master=NAME: {SENTINEL_FORM}")
    return names[0].strip()


def _db(path: str) -> int:
    number = path.strip("/")
    if not number:
        return 0
    if not number.isdigit():
        raise ValueError(f"the database after the hosts must be a number, not {number!r}")
    return int(number)
