"""The ``boomerang`` command: run, migrate and administer the service."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from config.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.models import ApiKey, Tenant

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def load_settings() -> Settings:
    """Settings from the environment, or a clean exit naming the bad variable."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """Boomerang: start slow work over HTTP, get the signed result POSTed back."""


@main.command()
def migrate() -> None:
    """Create the database if missing and apply every migration."""
    from app.migrate import upgrade_database

    settings = load_settings()
    upgrade_database(settings)
    click.echo("database is up to date")


@main.command()
@click.option(
    "--procfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=PROCFILE,
    show_default=True,
)
def up(procfile: Path) -> None:
    """Migrate, then run web, workers, beat and Flower in the foreground (Ctrl-C stops all)."""
    from honcho.environ import parse_procfile
    from honcho.manager import Manager

    from app.metrics.files import prepare_metrics_dir
    from app.migrate import upgrade_database

    settings = load_settings()
    upgrade_database(settings)
    prepare_metrics_dir(settings.metrics_dir)
    processes = parse_procfile(procfile.read_text()).processes
    web_port, flower_port = settings.web_port, settings.flower_port
    click.echo(f"API      http://127.0.0.1:{web_port}/v1")
    click.echo(f"Docs     http://127.0.0.1:{web_port}/docs")
    click.echo(f"OpenAPI  http://127.0.0.1:{web_port}/openapi.json")
    click.echo(f"Metrics  http://127.0.0.1:{web_port}/metrics")
    flower_host = settings.flower_address
    if ":" in flower_host:  # an IPv6 address goes in brackets in a URL
        flower_host = f"[{flower_host}]"
    flower_login = "" if settings.flower_basic_auth else " (login: the 'flower login' line below)"
    click.echo(f"Flower   http://{flower_host}:{flower_port}/{flower_login}")
    click.echo(f"Streams  http://127.0.0.1:{web_port}/stream/v1/...")
    click.echo(f"Portal   http://127.0.0.1:{web_port}/portal/ (sign in with an API key)")
    click.echo(_first_steps(web_port))
    # One origin, as behind a production proxy: the front takes the API's port and routes
    # /stream/ to the stream process and the rest to gunicorn, which listens on a spare port.
    gunicorn_port = _spare_port(settings.web_host)
    manager = Manager()
    for name, command in processes.items():
        if name != "release":
            env = own_installation_first(os.environ)
            if name == "web":
                env["BOOMERANG_WEB_PORT"] = str(gunicorn_port)
            manager.add_process(name, command, quiet=False, env=env, cwd=str(procfile.parent))
    front = (
        f"boomerang front --host {settings.web_host} --port {web_port} "
        f"--web http://127.0.0.1:{gunicorn_port} "
        f"--stream http://127.0.0.1:{settings.stream_port}"
    )
    manager.add_process(
        "front",
        front,
        quiet=False,
        env=own_installation_first(os.environ),
        cwd=str(procfile.parent),
    )
    manager.loop()
    sys.exit(manager.returncode)


def _first_steps(web_port: int) -> str:
    """What a newcomer types next, with this installation's command."""
    own = Path(sys.executable).parent / "boomerang"
    boomerang = str(own) if own.exists() else "boomerang"
    job = '{"type": "echo", "input": {"hello": "world"}}'
    return (
        "Next, in another terminal:\n"
        f"  {boomerang} tenant create my-team    # prints an API key, shown once\n"
        "  export KEY=bmr_...\n"
        f"  curl -s -X POST http://127.0.0.1:{web_port}/v1/jobs \\\n"
        '    -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \\\n'
        f"    -d '{job}'"
    )


def own_installation_first(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a Procfile command, with this installation's scripts (gunicorn,
    boomerang, celery) first on the PATH: ``/path/to/venv/bin/boomerang up`` must run the
    processes of the same installation, whether or not that venv is on the PATH, and never
    another one that is."""
    scripts = str(Path(sys.executable).parent)  # not resolved: a venv's python is a link
    return {**environ, "PATH": os.pathsep.join([scripts, environ.get("PATH", "")])}


@main.command()
def stream() -> None:
    """Serve long polls, job event streams and the event feed (under /stream) on
    BOOMERANG_STREAM_HOST:BOOMERANG_STREAM_PORT."""
    from app.logs import configure_logging
    from app.stream.server import run

    settings = load_settings()
    configure_logging(settings)
    run(settings)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, required=True, help="Port to listen on.")
@click.option("--web", "web_url", required=True, help="gunicorn's URL, e.g. http://127.0.0.1:8002")
@click.option("--stream", "stream_url", required=True, help="The stream process's URL.")
def front(host: str, port: int, web_url: str, stream_url: str) -> None:
    """Serve the API and the stream process on one origin (what `boomerang up` runs; in
    production your proxy does this)."""
    from app.stream.front import run

    run(host, port, web_url, stream_url)


def _spare_port(host: str) -> int:
    """A port nothing listens on right now, on ``host``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@main.group()
def tenant() -> None:
    """Manage tenants."""


@tenant.command("create")
@click.argument("name")
def tenant_create(name: str) -> None:
    """Create a tenant; print its id, first API key and signing secret as one JSON line."""
    from app.db import make_engine, make_session_factory
    from app.services.tenants import create_tenant

    settings = load_settings()
    engine = make_engine(settings)
    with make_session_factory(engine, sender=None)() as session:
        new = create_tenant(session, name)
        session.commit()
        click.echo(
            json.dumps(
                {
                    "tenant_id": str(new.tenant.id),
                    "api_key": new.api_key,
                    "signing_secret": new.tenant.signing_secret,
                }
            )
        )
    engine.dispose()


@contextlib.contextmanager
def _session() -> Iterator[Session]:
    """A session on the configured database, its engine disposed afterwards."""
    from app.db import make_engine, make_session_factory
    from app.key_generation import KeyGeneration, attach_key_generation

    settings = load_settings()
    engine = make_engine(settings)
    try:
        with make_session_factory(engine, sender=None)() as session:
            # A key revoked or a tenant deleted here is refused at once by every web process.
            attach_key_generation(session, KeyGeneration(settings.redis_url))
            yield session
    finally:
        engine.dispose()


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a {what} id") from None


def _key_line(key: ApiKey) -> str:
    return json.dumps(
        {
            "key_id": str(key.id),
            "tenant_id": str(key.tenant_id),
            "prefix": key.prefix,
            "created_at": key.created_at.isoformat(),
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        }
    )


@tenant.command("delete")
@click.argument("tenant_id")
def tenant_delete(tenant_id: str) -> None:
    """Delete a tenant and all its data: keys, callbacks, jobs, messages, deliveries, attempts.

    It cannot be undone. Prints how many rows of each kind were deleted as one JSON line.
    """
    from app.errors import NotFound
    from app.services.tenants import delete_tenant

    with _session() as session:
        try:
            counts = delete_tenant(session, _uuid(tenant_id, "tenant"))
        except NotFound as exc:
            raise click.ClickException(exc.message) from None
        session.commit()
    click.echo(json.dumps({"tenant_id": tenant_id, "deleted": counts}))


def _existing_tenant(session: Session, tenant_id: str) -> Tenant:
    """The tenant with this id, or a clean command-line error."""
    from app.errors import NotFound
    from app.services.tenants import get_tenant

    try:
        return get_tenant(session, _uuid(tenant_id, "tenant"))
    except NotFound as exc:
        raise click.ClickException(exc.message) from None


@main.group()
def key() -> None:
    """Manage tenants' API keys."""


@key.command("create")
@click.argument("tenant_id")
def key_create(tenant_id: str) -> None:
    """Add an API key to a tenant; print it (shown this once) as one JSON line."""
    from app.services.tenants import issue_api_key

    with _session() as session:
        owner = _existing_tenant(session, tenant_id)
        new = issue_api_key(session, owner)
        session.commit()
        click.echo(
            json.dumps(
                {"tenant_id": str(owner.id), "key_id": str(new.key.id), "api_key": new.api_key}
            )
        )


@key.command("list")
@click.argument("tenant_id")
def key_list(tenant_id: str) -> None:
    """List a tenant's API keys, revoked ones included, one JSON line each (no secrets)."""
    from app.services.tenants import list_api_keys

    with _session() as session:
        owner = _existing_tenant(session, tenant_id)
        for api_key in list_api_keys(session, owner):
            click.echo(_key_line(api_key))


@key.command("revoke")
@click.argument("prefix_or_id")
def key_revoke(prefix_or_id: str) -> None:
    """Revoke a key by its prefix (bmr_...) or id; it is refused from the next request on.

    Unlike the API, this revokes a tenant's last active key too: an operator may lock a
    tenant out on purpose.
    """
    from app.clock import utcnow
    from app.errors import NotFound
    from app.services.tenants import find_api_key, revoke_api_key

    with _session() as session:
        try:
            found = find_api_key(session, prefix_or_id)
        except NotFound as exc:
            raise click.ClickException(exc.message) from None
        revoked = revoke_api_key(session, found.tenant, found.id, utcnow(), keep_one=False)
        session.commit()
        click.echo(_key_line(revoked))


def _celery(argv: list[str]) -> None:
    from workers.main import app

    app.start(argv=argv)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--queue",
    "-Q",
    metavar="QUEUE",
    multiple=True,
    help="A queue to consume: jobs, deliveries or maintenance (repeat for more); default: all.",
)
@click.option(
    "--supervise/--no-supervise",
    default=True,
    show_default=True,
    help="Run the worker as a child process and start it again if it dies.",
)
@click.pass_context
def worker(ctx: click.Context, queue: tuple[str, ...], supervise: bool) -> None:
    """Run a Celery worker; extra options go to ``celery worker``."""
    from app.queues import DELIVERIES_QUEUE, QUEUES

    settings = load_settings()  # fail fast, before any process is started, on a bad setting
    unknown = sorted(set(queue) - set(QUEUES))
    if unknown:
        raise click.BadParameter(
            f"{unknown[0]!r} is not a queue; choose from {', '.join(QUEUES)}", param_hint="-Q"
        )
    queues = queue or QUEUES
    argv = ["worker", "-Q", ",".join(queues), *ctx.args]
    if not {"-c", "--concurrency"} & {arg.partition("=")[0] for arg in ctx.args}:
        # A delivery process keeps hundreds of attempts in flight; a job process runs one job.
        processes = (
            settings.delivery_processes if DELIVERIES_QUEUE in queues else settings.job_concurrency
        )
        argv += ["--concurrency", str(processes)]
    if not supervise:
        _celery(argv)
        return
    from workers.supervisor import supervise as run_supervised

    sys.exit(run_supervised([sys.executable, "-m", "celery", "-A", "workers.main", *argv]))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, which drives the recovery and retry sweep and pruning.

    Run it on every host: the beats elect one leader through a Postgres advisory lock, and only
    the leader sends the schedule. Extra options go to ``celery beat``.
    """
    _celery(["beat", *ctx.args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower, the Celery monitor, behind a login; extra options go to ``celery flower``.

    It listens on BOOMERANG_FLOWER_ADDRESS (loopback by default) and BOOMERANG_FLOWER_PORT
    (5555). Without BOOMERANG_FLOWER_BASIC_AUTH a random password is made and printed once, to
    stderr, and nowhere else. Flower runs in this process, so the password never shows up in the
    process list as a command-line argument would.
    """
    settings = load_settings()
    port = settings.flower_port
    basic_auth = settings.flower_basic_auth
    if not basic_auth:
        basic_auth = f"admin:{secrets.token_urlsafe(24)}"
        click.echo(f"flower login: {basic_auth}", err=True)
    from workers.flower_login import require_login_everywhere

    require_login_everywhere()
    _celery(
        [
            "flower",
            f"--address={settings.flower_address}",
            f"--port={port}",
            f"--basic-auth={basic_auth}",
            *ctx.args,
        ]
    )


@main.command()
@click.option("--port", default=9464, show_default=True, help="Port to listen on.")
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 (or ::) for a Prometheus on another machine.",
)
def metrics(port: int, address: str) -> None:
    """Serve this machine's worker metrics for Prometheus, at /metrics.

    For machines that run workers but no web process: it adds up what every Boomerang process on
    this machine counted in BOOMERANG_METRICS_DIR. The backlog gauges come from the web's
    /metrics only, so they are not counted once per machine. BOOMERANG_METRICS_TOKEN, when set,
    is required here too.
    """
    from app.metrics.server import serve_metrics

    settings = load_settings()
    if not settings.metrics_token and address not in {"127.0.0.1", "::1", "localhost"}:
        click.echo(
            f"warning: serving metrics on {address} without BOOMERANG_METRICS_TOKEN; "
            "keep the port off the internet",
            err=True,
        )
    click.echo(f"metrics on http://{address}:{port}/metrics (Ctrl-C to stop)")
    with contextlib.suppress(KeyboardInterrupt):
        serve_metrics(settings.metrics_dir, address, port, settings.metrics_token)


@main.command()
@click.option("--port", default=9000, show_default=True, help="Port to listen on (127.0.0.1).")
@click.option("--secret", help="A whsec_ secret: verify each delivery's signature with it.")
@click.option("--status", default=200, show_default=True, help="HTTP status to answer with.")
def receiver(port: int, secret: str | None, status: int) -> None:
    """A local callback receiver for trying Boomerang out: prints each delivery it gets."""
    from app.receiver import serve

    serve(port, status=status, secret=secret)
