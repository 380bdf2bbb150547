"""One frozen Settings object, read from the environment and validated at boot.

Every setting is listed in ``SETTINGS`` with its unit and default; the README's configuration
table mirrors it. Unknown ``BOOMERANG_*`` variables are refused so a typo cannot silently fall
back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is unknown or malformed; the message names it."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a number above 0")
    return value


def _parse_fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < 1:
        raise ValueError("expected a number from 0 up to (not including) 1")
    return value


def _parse_schedule(raw: str) -> tuple[int, ...]:
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts:
        raise ValueError("expected comma-separated seconds, e.g. 5,300,1800")
    values = tuple(int(part) for part in parts)
    if any(value < 0 for value in values):
        raise ValueError("delays cannot be negative")
    return values


def _parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number, 0 or more")
    return value


def _parse_networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part.strip()) for part in raw.split(",") if part.strip())


def _parse_rate_limit(raw: str) -> str:
    if not re.fullmatch(r"\s*\d+\s*(/|per)\s*(second|minute|hour|day)s?\s*", raw):
        raise ValueError("expected e.g. '1200 per minute' or '20/second'")
    return raw.strip()


def _parse_basic_auth(raw: str) -> str:
    if raw and (":" not in raw or raw.startswith(":") or raw.endswith(":")):
        raise ValueError("expected user:password")
    return raw


def _parse_names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_choice(choices: set[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(sorted(choices))}")
        return value

    return parse


def _parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _parse_path(raw: str) -> str:
    if not raw.strip():
        raise ValueError("expected a directory path")
    return raw.strip()


def _parse_token(raw: str) -> str:
    if raw and (len(raw) < 16 or any(char.isspace() for char in raw)):
        raise ValueError("expected at least 16 characters and no spaces")
    return raw


def _parse_secret_key(raw: str) -> str:
    if raw and (len(raw) < 32 or any(char.isspace() for char in raw)):
        raise ValueError("expected at least 32 characters and no spaces")
    return raw


def _parse_url(schemes: set[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.hostname or parts.path):
            raise ValueError(f"expected a {'/'.join(sorted(schemes))} URL")
        return raw.rstrip("/") if parts.scheme in {"http", "https"} else raw

    return parse


@dataclass(frozen=True)
class Setting:
    """How one environment variable maps onto a Settings field."""

    env: str
    field: str
    default: str
    parse: Callable[[str], Any]
    unit: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        "database_url",
        "postgresql://postgres@127.0.0.1:5432/boomerang",
        _parse_url({"postgresql", "postgresql+psycopg2"}),
        "URL",
        "Postgres database; created on `boomerang migrate` if missing.",
    ),
    Setting(
        "REDIS_URL",
        "redis_url",
        "redis://127.0.0.1:6379/0",
        _parse_url({"redis", "rediss"}),
        "URL",
        "Redis used as the Celery broker. It only wakes workers; it holds no state.",
    ),
    Setting(
        "BOOMERANG_PUBLIC_URL",
        "public_url",
        "http://127.0.0.1:8000",
        _parse_url({"http", "https"}),
        "URL",
        "Where clients reach the API; used to build `Location` and `redirect_link`.",
    ),
    Setting(
        "BOOMERANG_RETRY_SCHEDULE",
        "retry_schedule",
        "5,300,1800,7200,18000,36000,50400,72000,86400",
        _parse_schedule,
        "seconds, comma-separated",
        "Delay before each retry after a failed attempt; its length is the number of retries.",
    ),
    Setting(
        "BOOMERANG_RETRY_JITTER",
        "retry_jitter",
        "0.1",
        _parse_fraction,
        "fraction",
        "Each retry delay is moved by up to this fraction either way so retries do not stampede.",
    ),
    Setting(
        "BOOMERANG_CONNECT_TIMEOUT_SECONDS",
        "connect_timeout_seconds",
        "5",
        _parse_positive_float,
        "seconds",
        "Outbound connect timeout per delivery attempt.",
    ),
    Setting(
        "BOOMERANG_READ_TIMEOUT_SECONDS",
        "read_timeout_seconds",
        "15",
        _parse_positive_float,
        "seconds",
        "Outbound read timeout per delivery attempt.",
    ),
    Setting(
        "BOOMERANG_RESPONSE_BODY_LIMIT_BYTES",
        "response_body_limit_bytes",
        "65536",
        _parse_positive_int,
        "bytes",
        "How much of a receiver's response body is read and logged.",
    ),
    Setting(
        "BOOMERANG_MAX_REQUEST_BYTES",
        "max_request_bytes",
        "1048576",
        _parse_positive_int,
        "bytes",
        "Largest API request body accepted; larger ones get 413.",
    ),
    Setting(
        "BOOMERANG_ALLOW_PRIVATE_NETWORKS",
        "allow_private_networks",
        "false",
        _parse_bool,
        "boolean",
        "Let callbacks reach loopback and private addresses. For development and tests only.",
    ),
    Setting(
        "BOOMERANG_JOB_MODULES",
        "job_modules",
        "",
        _parse_names,
        "module names, comma-separated",
        "Extra Python modules whose `@job` functions are registered next to the built-in ones.",
    ),
    Setting(
        "BOOMERANG_SWEEP_INTERVAL_SECONDS",
        "sweep_interval_seconds",
        "2",
        _parse_positive_float,
        "seconds",
        "How often beat looks in Postgres for due or stranded jobs and deliveries.",
    ),
    Setting(
        "BOOMERANG_REQUEUE_AFTER_SECONDS",
        "requeue_after_seconds",
        "60",
        _parse_positive_int,
        "seconds",
        "A queued job enqueued this long ago and not yet picked up is enqueued again.",
    ),
    Setting(
        "BOOMERANG_DELIVERY_LEASE_SECONDS",
        "delivery_lease_seconds",
        "60",
        _parse_positive_int,
        "seconds",
        "How long a worker holds a delivery while sending it; must exceed the timeouts.",
    ),
    Setting(
        "BOOMERANG_JOB_LEASE_SECONDS",
        "job_lease_seconds",
        "900",
        _parse_positive_int,
        "seconds",
        "How long a worker holds a running job before another may take it over.",
    ),
    Setting(
        "BOOMERANG_JOB_MAX_ATTEMPTS",
        "job_max_attempts",
        "3",
        _parse_positive_int,
        "attempts",
        "How many times a job is started before it fails for good (a worker that dies counts).",
    ),
    Setting(
        "BOOMERANG_SECRET_ROTATION_GRACE_SECONDS",
        "secret_rotation_grace_seconds",
        "86400",
        _parse_positive_int,
        "seconds",
        "How long a rotated-out callback secret keeps signing.",
    ),
    Setting(
        "BOOMERANG_IDEMPOTENCY_TTL_SECONDS",
        "idempotency_ttl_seconds",
        "86400",
        _parse_positive_int,
        "seconds",
        "How long an `Idempotency-Key` maps to its job.",
    ),
    Setting(
        "BOOMERANG_SWEEP_BATCH_SIZE",
        "sweep_batch_size",
        "500",
        _parse_positive_int,
        "rows",
        "Most jobs one sweep enqueues.",
    ),
    Setting(
        "BOOMERANG_DELIVERY_CONCURRENCY",
        "delivery_concurrency",
        "256",
        _parse_positive_int,
        "requests",
        "Delivery attempts in flight at once in each delivery worker process.",
    ),
    Setting(
        "BOOMERANG_CALLBACK_CONCURRENCY",
        "callback_concurrency",
        "128",
        _parse_positive_int,
        "requests",
        "Most of those any one callback (or ad-hoc URL) may hold, so a slow one cannot take all.",
    ),
    Setting(
        "BOOMERANG_DELIVERY_BATCH_SIZE",
        "delivery_batch_size",
        "100",
        _parse_positive_int,
        "deliveries",
        "Most deliveries a delivery process leases in one query.",
    ),
    Setting(
        "BOOMERANG_CALLBACK_DISABLE_AFTER_SECONDS",
        "callback_disable_after_seconds",
        "432000",
        _parse_positive_int,
        "seconds",
        "A callback failing this long with no success is disabled (default 5 days).",
    ),
    Setting(
        "BOOMERANG_CALLBACK_FAILING_AFTER_SECONDS",
        "callback_failing_after_seconds",
        "60",
        _parse_non_negative_int,
        "seconds",
        "A callback failing this long with no success raises `callback.failing` (0: at once).",
    ),
    Setting(
        "BOOMERANG_RETENTION_DAYS",
        "retention_days",
        "30",
        _parse_positive_int,
        "days",
        "Delivery attempts and finished jobs older than this are pruned.",
    ),
    Setting(
        "BOOMERANG_PRUNE_INTERVAL_SECONDS",
        "prune_interval_seconds",
        "3600",
        _parse_positive_float,
        "seconds",
        "How often beat prunes old rows.",
    ),
    Setting(
        "BOOMERANG_PRUNE_BATCH_SIZE",
        "prune_batch_size",
        "1000",
        _parse_positive_int,
        "rows",
        "Rows deleted per statement while pruning, so no lock is held for long.",
    ),
    Setting(
        "BOOMERANG_HTTPS_ONLY",
        "https_only",
        "false",
        _parse_bool,
        "boolean",
        "Accept and call only https callback URLs.",
    ),
    Setting(
        "BOOMERANG_ALLOWED_NETWORKS",
        "allowed_networks",
        "",
        _parse_networks,
        "CIDRs, comma-separated",
        "Networks callbacks may reach although they are not public (e.g. `10.1.0.0/16`).",
    ),
    Setting(
        "BOOMERANG_TOTAL_TIMEOUT_SECONDS",
        "total_timeout_seconds",
        "30",
        _parse_positive_float,
        "seconds",
        "Longest a delivery attempt may take in all, however slowly the receiver trickles bytes.",
    ),
    Setting(
        "BOOMERANG_MAX_PAYLOAD_BYTES",
        "max_payload_bytes",
        "1048576",
        _parse_positive_int,
        "bytes",
        "Largest body we POST; a larger event fails its delivery with a clear error.",
    ),
    Setting(
        "BOOMERANG_MAX_CALLBACK_HEADERS",
        "max_callback_headers",
        "10",
        _parse_non_negative_int,
        "headers",
        "Most custom headers a callback may add to its deliveries.",
    ),
    Setting(
        "BOOMERANG_RATE_LIMIT",
        "rate_limit",
        "1200 per minute",
        _parse_rate_limit,
        "requests per period",
        "Per-tenant API rate limit, shared across processes and hosts through Redis.",
    ),
    Setting(
        "BOOMERANG_FLOWER_BASIC_AUTH",
        "flower_basic_auth",
        "",
        _parse_basic_auth,
        "user:password",
        "Flower's login. Empty: a random password is made and printed once at start.",
    ),
    Setting(
        "BOOMERANG_FLOWER_ADDRESS",
        "flower_address",
        "127.0.0.1",
        lambda raw: str(ipaddress.ip_address(raw)),
        "IP address",
        "Where Flower listens; loopback unless you put it behind your own proxy.",
    ),
    Setting(
        "BOOMERANG_LOG_FORMAT",
        "log_format",
        "json",
        _parse_choice({"json", "text"}),
        "json or text",
        "Logs as one JSON object per line, or as plain text lines for reading in a terminal.",
    ),
    Setting(
        "BOOMERANG_LOG_LEVEL",
        "log_level",
        "INFO",
        _parse_log_level,
        "level name",
        "Least severe log level written: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    ),
    Setting(
        "BOOMERANG_METRICS_DIR",
        "metrics_dir",
        str(Path(tempfile.gettempdir()) / "boomerang-metrics"),
        _parse_path,
        "path",
        "Where this machine's processes keep their Prometheus counters for `/metrics` to add up.",
    ),
    Setting(
        "BOOMERANG_METRICS_TOKEN",
        "metrics_token",
        "",
        _parse_token,
        "token",
        "When set, `/metrics` and `boomerang metrics` answer only `Authorization: Bearer <token>`.",
    ),
    Setting(
        "BOOMERANG_SECRET_KEY",
        "secret_key",
        "",
        _parse_secret_key,
        "secret (32+ characters)",
        "Signs the portal's session cookies; the same on every web process. Empty: one is made "
        "once and kept in Postgres, so every process and host shares it.",
    ),
    Setting(
        "BOOMERANG_PORTAL_SESSION_SECONDS",
        "portal_session_seconds",
        "43200",
        _parse_positive_int,
        "seconds",
        "How long a portal sign-in lasts before the API key must be entered again.",
    ),
)

_KNOWN = {setting.env for setting in SETTINGS}
# Variables read by the process files rather than by Settings; accepted so they are not "unknown".
_PROCESS_ENV = {
    "BOOMERANG_WEB_HOST",
    "BOOMERANG_WEB_PORT",
    "BOOMERANG_FLOWER_PORT",
    "BOOMERANG_DELIVERY_PROCESSES",
    "BOOMERANG_JOB_CONCURRENCY",
    "BOOMERANG_WEB_WORKERS",
    "BOOMERANG_WEB_THREADS",
}


@dataclass(frozen=True)
class Settings:
    """Validated configuration shared by the API, the workers and the CLI."""

    database_url: str
    redis_url: str
    public_url: str
    retry_schedule: tuple[int, ...]
    retry_jitter: float
    connect_timeout_seconds: float
    read_timeout_seconds: float
    response_body_limit_bytes: int
    max_request_bytes: int
    allow_private_networks: bool
    job_modules: tuple[str, ...]
    sweep_interval_seconds: float
    requeue_after_seconds: int
    delivery_lease_seconds: int
    job_lease_seconds: int
    job_max_attempts: int
    secret_rotation_grace_seconds: int
    idempotency_ttl_seconds: int
    sweep_batch_size: int
    delivery_concurrency: int
    callback_concurrency: int
    delivery_batch_size: int
    callback_disable_after_seconds: int
    callback_failing_after_seconds: int
    retention_days: int
    prune_interval_seconds: float
    prune_batch_size: int
    https_only: bool
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    total_timeout_seconds: float
    max_payload_bytes: int
    max_callback_headers: int
    rate_limit: str
    log_format: str
    log_level: str
    metrics_dir: str
    metrics_token: str = dataclasses.field(repr=False)
    flower_basic_auth: str = dataclasses.field(repr=False)
    secret_key: str = dataclasses.field(repr=False)
    portal_session_seconds: int = 43200
    flower_address: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build and validate settings; raise SettingsError naming the first bad variable."""
        env = os.environ if environ is None else environ
        unknown = sorted(
            name
            for name in env
            if name.startswith("BOOMERANG_") and name not in _KNOWN | _PROCESS_ENV
        )
        if unknown:
            raise SettingsError(
                f"unknown setting {unknown[0]}; see the README's configuration table"
            )
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env, setting.default)
            try:
                values[setting.field] = setting.parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{setting.env}={raw!r} is invalid: {exc}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules that no single variable can express."""
        if self.delivery_lease_seconds <= self.total_timeout_seconds:
            raise SettingsError(
                "BOOMERANG_DELIVERY_LEASE_SECONDS must exceed BOOMERANG_TOTAL_TIMEOUT_SECONDS "
                f"({self.total_timeout_seconds:g} s), or a slow attempt could be sent twice at once"
            )

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated again."""
        updated = dataclasses.replace(self, **changes)
        updated.check()
        return updated
