"""One frozen Settings object, read from the environment and validated at boot.

Each setting is declared once, on its field: the environment variable, the default, the parser,
the unit and the help. The README's configuration table is generated from these declarations
(``python -m config.settings --markdown``) and a test keeps the two equal. Unknown
``BOOMERANG_*`` variables are refused so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.redis_url import parse_redis_url


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


def _parse_request_line_limit(raw: str) -> int:
    # gunicorn reads at most 8190 and takes 0 for "no limit", which is never what we want.
    value = int(raw)
    if not 256 <= value <= 8190:
        raise ValueError("expected a whole number from 256 to 8190")
    return value


def _parse_header_limit(raw: str) -> int:
    value = int(raw)
    if not 256 <= value <= 65536:
        raise ValueError("expected a whole number from 256 to 65536")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a number above 0")
    return value


def _parse_finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
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


def _without_password(url: str) -> str:
    # A refused URL is echoed at boot, into logs: never with the password it may carry.
    return re.sub(r"^([\w+.-]+://[^:/@]*):[^/?#]*@", r"\1:***@", url)


def _parse_port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("expected a port from 1 to 65535")
    return value


def _parse_host(raw: str) -> str:
    if not raw.strip() or any(char.isspace() for char in raw.strip()):
        raise ValueError("expected a host name or address")
    return raw.strip()


@dataclass(frozen=True)
class Setting:
    """How one environment variable maps onto a Settings field."""

    env: str
    default: str
    parse: Callable[[str], Any]
    unit: str
    help: str
    shown_default: str | None = None  # for the table, where the real default is machine-made
    fallback: str | None = None  # a variable read when ``env`` is not set (a platform's own)

    @property
    def documented_default(self) -> str:
        if self.shown_default is not None:
            return f"`{self.shown_default}`"
        return f"`{self.default}`" if self.default else "(none)"


def setting(
    env: str,
    default: str,
    parse: Callable[[str], Any],
    unit: str,
    help: str,
    *,
    secret: bool = False,
    shown_default: str | None = None,
    fallback: str | None = None,
) -> Any:
    """Declare a Settings field read from ``env`` (else from ``fallback``); a secret one is kept
    out of ``repr``."""
    return dataclasses.field(
        repr=not secret,
        metadata={"setting": Setting(env, default, parse, unit, help, shown_default, fallback)},
    )


@dataclass(frozen=True)
class Settings:
    """Validated configuration shared by the API, the workers and the CLI."""

    database_url: str = setting(
        "DATABASE_URL",
        "postgresql://postgres@127.0.0.1:5432/boomerang",
        _parse_url({"postgresql", "postgresql+psycopg2"}),
        "URL",
        "Postgres database; created on `boomerang migrate` if missing.",
    )
    database_connect_timeout_seconds: float = setting(
        "BOOMERANG_DATABASE_CONNECT_TIMEOUT_SECONDS",
        "2",
        _parse_positive_float,
        "seconds",
        "Longest wait to connect to Postgres, and for a free connection in a process's pool.",
    )
    statement_timeout_seconds: float = setting(
        "BOOMERANG_STATEMENT_TIMEOUT_SECONDS",
        "5",
        _parse_positive_float,
        "seconds",
        "Postgres statement_timeout of the web and stream processes.",
    )
    worker_statement_timeout_seconds: float = setting(
        "BOOMERANG_WORKER_STATEMENT_TIMEOUT_SECONDS",
        "60",
        _parse_positive_float,
        "seconds",
        "Postgres statement_timeout of the workers.",
    )
    request_database_seconds: float = setting(
        "BOOMERANG_REQUEST_DATABASE_SECONDS",
        "4",
        _parse_positive_float,
        "seconds",
        "Most one API request waits on Postgres in all (connects, pool, statements), checked "
        "on the client so that a frozen server cannot outlast it; then the API answers 503.",
    )
    redis_url: str = setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        parse_redis_url,
        "URL",
        "Redis used as the Celery broker. It only wakes workers; it holds no state. "
        "`redis://` or `rediss://` for one server; for a primary watched by Redis Sentinel, "
        "`sentinel://[[user]:password@]host:port[,host:port...][/db]?master=NAME` (see "
        "Operations).",
    )
    redis_timeout_seconds: float = setting(
        "BOOMERANG_REDIS_TIMEOUT_SECONDS",
        "0.5",
        _parse_positive_float,
        "seconds",
        "Connect and read timeout of every Redis call the web and stream processes make; a hung "
        "Redis costs a request at most this, then the process leaves Redis alone for 5 s.",
    )
    public_url: str = setting(
        "BOOMERANG_PUBLIC_URL",
        "http://127.0.0.1:8000",
        _parse_url({"http", "https"}),
        "URL",
        "Where clients reach the API; used to build `redirect_link`.",
    )
    retry_schedule: tuple[int, ...] = setting(
        "BOOMERANG_RETRY_SCHEDULE",
        "5,300,1800,7200,18000,36000,50400,72000,86400",
        _parse_schedule,
        "seconds, comma-separated",
        "Delay before each retry after a failed attempt; its length is the number of retries.",
    )
    retry_jitter: float = setting(
        "BOOMERANG_RETRY_JITTER",
        "0.1",
        _parse_fraction,
        "fraction",
        "Each retry delay is moved by up to this fraction either way so retries do not stampede.",
    )
    connect_timeout_seconds: float = setting(
        "BOOMERANG_CONNECT_TIMEOUT_SECONDS",
        "5",
        _parse_positive_float,
        "seconds",
        "Outbound connect timeout per delivery attempt.",
    )
    read_timeout_seconds: float = setting(
        "BOOMERANG_READ_TIMEOUT_SECONDS",
        "15",
        _parse_positive_float,
        "seconds",
        "Outbound read timeout per delivery attempt.",
    )
    response_body_limit_bytes: int = setting(
        "BOOMERANG_RESPONSE_BODY_LIMIT_BYTES",
        "65536",
        _parse_positive_int,
        "bytes",
        "How much of a receiver's response body is read and logged.",
    )
    max_request_bytes: int = setting(
        "BOOMERANG_MAX_REQUEST_BYTES",
        "1048576",
        _parse_positive_int,
        "bytes",
        "Largest API request body accepted; larger ones get 413.",
    )
    max_request_line_bytes: int = setting(
        "BOOMERANG_MAX_REQUEST_LINE_BYTES",
        "4094",
        _parse_request_line_limit,
        "bytes",
        "Longest request line (method, path and query) gunicorn reads; longer ones get 414.",
    )
    max_header_bytes: int = setting(
        "BOOMERANG_MAX_HEADER_BYTES",
        "8190",
        _parse_header_limit,
        "bytes",
        "Longest request header line gunicorn reads; a longer one gets 431.",
    )
    allow_private_networks: bool = setting(
        "BOOMERANG_ALLOW_PRIVATE_NETWORKS",
        "false",
        _parse_bool,
        "boolean",
        "Let callbacks reach loopback and private addresses. For development and tests only.",
    )
    job_modules: tuple[str, ...] = setting(
        "BOOMERANG_JOB_MODULES",
        "",
        _parse_names,
        "module names, comma-separated",
        "Extra Python modules whose `@job` functions are registered next to the built-in ones.",
    )
    sweep_interval_seconds: float = setting(
        "BOOMERANG_SWEEP_INTERVAL_SECONDS",
        "2",
        _parse_positive_float,
        "seconds",
        "How often beat looks in Postgres for due or stranded jobs and deliveries.",
    )
    delivery_lease_seconds: int = setting(
        "BOOMERANG_DELIVERY_LEASE_SECONDS",
        "60",
        _parse_positive_int,
        "seconds",
        "How long a worker holds a delivery while sending it; must exceed "
        "`BOOMERANG_TOTAL_TIMEOUT_SECONDS`.",
    )
    job_lease_seconds: int = setting(
        "BOOMERANG_JOB_LEASE_SECONDS",
        "900",
        _parse_positive_int,
        "seconds",
        "How long a worker holds a running job before another may take it over.",
    )
    job_max_attempts: int = setting(
        "BOOMERANG_JOB_MAX_ATTEMPTS",
        "3",
        _parse_positive_int,
        "attempts",
        "How many times a job is started before it fails for good (a worker that dies counts).",
    )
    secret_rotation_grace_seconds: int = setting(
        "BOOMERANG_SECRET_ROTATION_GRACE_SECONDS",
        "86400",
        _parse_positive_int,
        "seconds",
        "How long a rotated-out callback secret keeps signing.",
    )
    idempotency_ttl_seconds: int = setting(
        "BOOMERANG_IDEMPOTENCY_TTL_SECONDS",
        "86400",
        _parse_positive_int,
        "seconds",
        "How long an `Idempotency-Key` maps to its job.",
    )
    replay_batch_size: int = setting(
        "BOOMERANG_REPLAY_BATCH_SIZE",
        "500",
        _parse_positive_int,
        "deliveries",
        "Deliveries one step of a bulk replay re-sends, in one transaction.",
    )
    replay_max_deliveries: int = setting(
        "BOOMERANG_REPLAY_MAX_DELIVERIES",
        "100000",
        _parse_positive_int,
        "deliveries",
        "Most deliveries one bulk replay may re-send; a wider search is refused (422).",
    )
    portal_link_max_seconds: int = setting(
        "BOOMERANG_PORTAL_LINK_MAX_SECONDS",
        "3600",
        _parse_positive_int,
        "seconds",
        "Longest a portal sign-in link may stay valid before its one use.",
    )
    sweep_batch_size: int = setting(
        "BOOMERANG_SWEEP_BATCH_SIZE",
        "500",
        _parse_positive_int,
        "rows",
        "Most jobs one sweep enqueues.",
    )
    delivery_concurrency: int = setting(
        "BOOMERANG_DELIVERY_CONCURRENCY",
        "256",
        _parse_positive_int,
        "requests",
        "Delivery attempts in flight at once in each delivery worker process. Callbacks it has "
        "not yet heard answer well share half of them (three quarters with one probe each), so "
        "a quarter always stays for those that answer.",
    )
    callback_concurrency: int = setting(
        "BOOMERANG_CALLBACK_CONCURRENCY",
        # What one host's two delivery processes allowed when the limit was per process: a
        # fleet-wide limit of that size keeps one host as fast, and adding hosts no longer
        # multiplies it.
        "256",
        _parse_positive_int,
        "requests",
        "Most attempts any one callback (or ad-hoc URL) may have in flight across the whole "
        "fleet, unless the callback sets its own max_concurrency. Each callback's limit is "
        "learned up to this, shared through Redis: it starts at 8, grows by three per answer "
        "until first halved (one after), and halves on timeouts, connection errors and "
        "429/502/503/504, so a slow or dead one holds few slots.",
    )
    delivery_batch_size: int = setting(
        "BOOMERANG_DELIVERY_BATCH_SIZE",
        "100",
        _parse_positive_int,
        "deliveries",
        "Most deliveries a delivery process leases in one query.",
    )
    callback_disable_after_seconds: int = setting(
        "BOOMERANG_CALLBACK_DISABLE_AFTER_SECONDS",
        "432000",
        _parse_positive_int,
        "seconds",
        "A callback failing this long with no success is disabled (5 days).",
    )
    callback_failing_after_seconds: int = setting(
        "BOOMERANG_CALLBACK_FAILING_AFTER_SECONDS",
        "60",
        _parse_non_negative_int,
        "seconds",
        "A callback failing this long with no success raises `callback.failing` (`0`: at its "
        "first failure).",
    )
    retention_days: int = setting(
        "BOOMERANG_RETENTION_DAYS",
        "30",
        _parse_positive_int,
        "days",
        "Delivery attempts and finished jobs older than this are pruned (attempts a whole UTC "
        "day at a time: at most a day later).",
    )
    prune_interval_seconds: float = setting(
        "BOOMERANG_PRUNE_INTERVAL_SECONDS",
        "3600",
        _parse_positive_float,
        "seconds",
        "How often beat prunes old rows.",
    )
    prune_batch_size: int = setting(
        "BOOMERANG_PRUNE_BATCH_SIZE",
        "1000",
        _parse_positive_int,
        "rows",
        "Rows deleted per statement while pruning, so no lock is held for long.",
    )
    https_only: bool = setting(
        "BOOMERANG_HTTPS_ONLY",
        "false",
        _parse_bool,
        "boolean",
        "Accept and call only https callback URLs.",
    )
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        "BOOMERANG_ALLOWED_NETWORKS",
        "",
        _parse_networks,
        "CIDRs, comma-separated",
        "Networks callbacks may reach although they are not public (e.g. `10.1.0.0/16`).",
    )
    total_timeout_seconds: float = setting(
        "BOOMERANG_TOTAL_TIMEOUT_SECONDS",
        "30",
        _parse_positive_float,
        "seconds",
        "Longest a delivery attempt may take in all, however slowly the receiver trickles bytes.",
    )
    max_payload_bytes: int = setting(
        "BOOMERANG_MAX_PAYLOAD_BYTES",
        "1048576",
        _parse_positive_int,
        "bytes",
        "Largest body we POST; a larger event fails its delivery with a clear error.",
    )
    max_callback_headers: int = setting(
        "BOOMERANG_MAX_CALLBACK_HEADERS",
        "10",
        _parse_non_negative_int,
        "headers",
        "Most custom headers a callback may add to its deliveries.",
    )
    max_callbacks_per_tenant: int = setting(
        "BOOMERANG_MAX_CALLBACKS_PER_TENANT",
        "50",
        _parse_positive_int,
        "callbacks",
        "Most callbacks one tenant may register (each is a destination every event may go to).",
    )
    tenant_attempts_per_second: int = setting(
        "BOOMERANG_TENANT_ATTEMPTS_PER_SECOND",
        "1000",
        _parse_non_negative_int,
        "attempts per second",
        "Most delivery attempts one tenant's events may make per second, across every worker "
        "and host (counted in Redis); the rest wait for the next second. 0: no ceiling.",
    )
    rate_limit: str = setting(
        "BOOMERANG_RATE_LIMIT",
        "1200 per minute",
        _parse_rate_limit,
        "requests per period",
        "Per-tenant API rate limit, shared across processes and hosts through Redis.",
    )
    api_key_cache_seconds: int = setting(
        "BOOMERANG_API_KEY_CACHE_SECONDS",
        "10",
        _parse_non_negative_int,
        "seconds",
        "How long a web process remembers an API key it checked, so the key's next requests skip "
        "the Postgres lookup. A revoked key is refused at once regardless: every change to keys or "
        "tenants tells every process through Redis. 0: look up every request.",
    )
    flower_basic_auth: str = setting(
        "BOOMERANG_FLOWER_BASIC_AUTH",
        "",
        _parse_basic_auth,
        "user:password",
        "Flower's login. Empty: a random password is made and printed once at start.",
        secret=True,
    )
    flower_address: str = setting(
        "BOOMERANG_FLOWER_ADDRESS",
        "127.0.0.1",
        lambda raw: str(ipaddress.ip_address(raw)),
        "IP address",
        "Where Flower listens; loopback unless you put it behind your own proxy.",
    )
    log_format: str = setting(
        "BOOMERANG_LOG_FORMAT",
        "json",
        _parse_choice({"json", "text"}),
        "`json` or `text`",
        "Logs as one JSON object per line, or as plain text lines for reading in a terminal.",
    )
    log_level: str = setting(
        "BOOMERANG_LOG_LEVEL",
        "INFO",
        _parse_log_level,
        "level name",
        "Least severe log level written: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`.",
    )
    metrics_dir: str = setting(
        "BOOMERANG_METRICS_DIR",
        str(Path(tempfile.gettempdir()) / "boomerang-metrics"),
        _parse_path,
        "path",
        "Where this machine's processes keep their Prometheus counters for `/metrics` to add up.",
        shown_default="<system temp dir>/boomerang-metrics",
    )
    metrics_token: str = setting(
        "BOOMERANG_METRICS_TOKEN",
        "",
        _parse_token,
        "token (16+ characters)",
        "When set, `/metrics` and `boomerang metrics` answer only `Authorization: Bearer <token>`.",
        secret=True,
    )
    tracing: bool = setting(
        "BOOMERANG_TRACING",
        "false",
        _parse_bool,
        "boolean",
        "Send OpenTelemetry traces: one trace from `POST /v1/jobs` through the job's run to every "
        "delivery attempt, and a W3C `traceparent` header on each callback. Where they go is the "
        "standard `OTEL_*` variables' to say (see Tracing).",
    )
    secret_key: str = setting(
        "BOOMERANG_SECRET_KEY",
        "",
        _parse_secret_key,
        "secret (32+ characters)",
        "Signs the portal's session cookies; the same on every web process. Empty: one is made "
        "once and kept in Postgres, so every process and host shares it (see Portal).",
        secret=True,
    )
    portal_session_seconds: int = setting(
        "BOOMERANG_PORTAL_SESSION_SECONDS",
        "43200",
        _parse_positive_int,
        "seconds",
        "How long a portal sign-in lasts before the API key must be entered again (12 h).",
    )
    web_host: str = setting(
        "BOOMERANG_WEB_HOST",
        "127.0.0.1",
        _parse_host,
        "host",
        "Where gunicorn listens; loopback unless a proxy on another machine forwards to it.",
    )
    web_port: int = setting(
        "BOOMERANG_WEB_PORT",
        "8000",
        _parse_port,
        "port",
        "Where the API listens (gunicorn; under `boomerang up`, the one origin in front of it). "
        "When unset, `PORT` is used, which Heroku, Dokku and other Procfile hosts set.",
        fallback="PORT",
    )
    stream_host: str = setting(
        "BOOMERANG_STREAM_HOST",
        "127.0.0.1",
        _parse_host,
        "host",
        "Where the stream process (long polls, event streams, the feed) listens.",
    )
    stream_port: int = setting(
        "BOOMERANG_STREAM_PORT",
        "8001",
        _parse_port,
        "port",
        "Where the stream process listens; route `/stream/` of the API's origin to it.",
    )
    stream_token_seconds: int = setting(
        "BOOMERANG_STREAM_TOKEN_SECONDS",
        "3600",
        _parse_positive_int,
        "seconds",
        "How long a job's `stream_url` token is valid.",
    )
    web_workers: int = setting(
        "BOOMERANG_WEB_WORKERS",
        "2",
        _parse_positive_int,
        "processes",
        "gunicorn worker processes.",
    )
    web_threads: int = setting(
        "BOOMERANG_WEB_THREADS",
        "4",
        _parse_positive_int,
        "threads",
        "Threads in each gunicorn worker process.",
    )
    job_concurrency: int = setting(
        "BOOMERANG_JOB_CONCURRENCY",
        "2",
        _parse_positive_int,
        "processes",
        "Job processes in a worker that consumes the `jobs` queue (`--concurrency` overrides).",
    )
    delivery_processes: int = setting(
        "BOOMERANG_DELIVERY_PROCESSES",
        # One event loop keeps hundreds of attempts in flight; on a machine that also runs the
        # web and the jobs, more processes than half the CPUs only fight over them.
        str(max(1, (os.cpu_count() or 2) // 2)),
        _parse_positive_int,
        "processes",
        "Delivery processes in a worker that consumes the `deliveries` queue, each with "
        "`BOOMERANG_DELIVERY_CONCURRENCY` attempts in flight (`--concurrency` overrides).",
        shown_default="half the CPUs, at least 1",
    )
    flower_port: int = setting(
        "BOOMERANG_FLOWER_PORT",
        "5555",
        _parse_port,
        "port",
        "Where Flower listens.",
    )
    clock_skew_seconds: float = setting(
        "BOOMERANG_CLOCK_SKEW_SECONDS",
        "0",
        _parse_finite_float,
        "seconds",
        "For tests only: run this process's own clock this far ahead (or behind, if negative) "
        "to act out a badly set host. Leases and due times follow Postgres' clock regardless.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build and validate settings; raise SettingsError naming the first bad variable."""
        env = os.environ if environ is None else environ
        known = {declared.env for _, declared in declarations()}
        unknown = sorted(
            name for name in env if name.startswith("BOOMERANG_") and name not in known
        )
        if unknown:
            raise SettingsError(
                f"unknown setting {unknown[0]}; see the README's configuration table"
            )
        values: dict[str, Any] = {}
        for field_name, declared in declarations():
            name = declared.env
            if name not in env and declared.fallback is not None and declared.fallback in env:
                name = declared.fallback
            raw = env.get(name, declared.default)
            try:
                values[field_name] = declared.parse(raw)
            except ValueError as exc:
                shown = _without_password(raw) if declared.unit == "URL" else raw
                raise SettingsError(f"{name}={shown!r} is invalid: {exc}") from None
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


def declarations() -> list[tuple[str, Setting]]:
    """Every setting as (field name, declaration), in the order they are declared."""
    return [(field.name, field.metadata["setting"]) for field in dataclasses.fields(Settings)]


def markdown_table() -> str:
    """The README's configuration table, made from the declarations."""
    rows = ["| Variable | Unit | Default | What it does |", "|---|---|---|---|"]
    for _, declared in declarations():
        rows.append(
            f"| `{declared.env}` | {declared.unit} | {declared.documented_default} "
            f"| {declared.help} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m config.settings --markdown")
    sys.stdout.write(markdown_table())
