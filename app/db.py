"""Engine, session factory, and the one after-commit hook.

Tasks are registered on the session and sent only once its transaction commits, so a worker never
wakes up for a row it cannot see yet, and a rolled-back request enqueues nothing. Anything else
that must happen only if the change is in Postgres (counting a metric) rides the same hook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings


@dataclass(frozen=True)
class TaskCall:
    """A Celery task to send by name once the transaction commits."""

    name: str
    args: tuple[Any, ...]
    queue: str


TaskSender = Callable[[Sequence[TaskCall]], None]
T = TypeVar("T")
log = logging.getLogger(__name__)

_PENDING_TASKS = "boomerang.pending_tasks"
_PENDING_CALLS = "boomerang.after_commit"
_BATCHES = "boomerang.after_commit_batches"
_SENDER = "boomerang.task_sender"
_CHECKED_IN_AT = "boomerang.checked_in_at"
# A pooled connection unused for this long is pinged before it is handed out again.
IDLE_PING_SECONDS = 1.0


# Probed after this many idle seconds, then every interval; ended after count unanswered probes.
# The same for every connection and for the scheduler's lock (workers/leader.py).
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": 2,
    "tcp_keepalives_interval": 1,
    "tcp_keepalives_count": 3,
}
# So a silent host's sessions end within this long: sooner than a lease runs out, so the rows it
# had locked are free when the sweep comes for its work. (The sweep passes over locked rows; a
# session that outlived the lease let the host finish, once back, work the others should have
# taken over.)
DEAD_PEER_SECONDS = (
    SERVER_KEEPALIVES["tcp_keepalives_idle"]
    + SERVER_KEEPALIVES["tcp_keepalives_interval"] * SERVER_KEEPALIVES["tcp_keepalives_count"]
)
# Keepalives probe only a quiet socket. A host that goes silent just after Postgres answered it
# leaves that answer unacknowledged, and TCP would retransmit it for a quarter of an hour: data
# unacknowledged as long (milliseconds) also ends the session.
SERVER_USER_TIMEOUT_MS = DEAD_PEER_SECONDS * 1000


def make_engine(
    settings: Settings,
    statement_timeout_seconds: float | None = None,
    server_settings: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine for the configured database; connections idle for a while are pinged before
    use (see ``ping_idle_connections``).

    Connects and pool checkouts give up after ``BOOMERANG_DATABASE_CONNECT_TIMEOUT_SECONDS``;
    a process that serves requests or runs work also sets its statement_timeout.
    ``server_settings`` are more of Postgres's settings for each connection.
    """
    url = make_url(settings.database_url).set(drivername="postgresql+psycopg2")
    # The hot path's prepared statements (app/prepared.py) are planned once, for any values:
    # planning them per call cost Postgres more than running them. Only prepared statements
    # follow this setting; every other statement is sent as text and planned with its values.
    server_options = ["-c plan_cache_mode=force_generic_plan"]
    # A host that dies without closing its connections (power lost, link cut) leaves its
    # sessions open on the server, and with them the rows they had locked, which other hosts'
    # SKIP LOCKED claims then pass over: Postgres probes each idle connection and ends one
    # whose host stopped answering (Linux's default waits over two hours).
    server_options += [f"-c {name}={value}" for name, value in SERVER_KEEPALIVES.items()]
    server_options.append(f"-c tcp_user_timeout={SERVER_USER_TIMEOUT_MS}")
    server_options += [f"-c {name}={value}" for name, value in (server_settings or {}).items()]
    if statement_timeout_seconds is not None:
        milliseconds = round(statement_timeout_seconds * 1000)
        server_options.append(f"-c statement_timeout={milliseconds}")
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, round(settings.database_connect_timeout_seconds)),
        "options": " ".join(server_options),
    }
    options: dict[str, Any] = {
        "pool_size": 10,
        "max_overflow": 20,
        "pool_timeout": settings.database_connect_timeout_seconds,
        "connect_args": connect_args,
        # A failed statement's parameters (a callback's headers, a receiver's answer) must not
        # end up in a logged exception.
        "hide_parameters": True,
    }
    options.update(kwargs)
    engine = create_engine(url, **options)
    ping_idle_connections(engine)
    return engine


def ping_idle_connections(engine: Engine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Ping a pooled connection before use only when it sat unused for ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip for every
    request and every job, which a busy process does not need (its connections were in use a
    moment ago). A connection that dies in use (Postgres restarted under load) fails its
    statement instead, and SQLAlchemy then replaces every connection the pool holds; the
    idle ones, which are the ones a restart catches unawares, are still checked first.
    """

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return  # new (it was just connected), or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (up to three times).
            raise DisconnectionError() from exc


def make_session_factory(bind: Any, sender: TaskSender | None) -> sessionmaker[Session]:
    """Sessions whose registered tasks go to ``sender`` after commit."""
    return sessionmaker(bind=bind, expire_on_commit=False, info={_SENDER: sender})


def enqueue_after_commit(session: Session, name: str, *args: Any, queue: str) -> None:
    """Send task ``name`` with ``args`` once this session's transaction commits (once, however
    many times the same call is registered)."""
    pending = session.info.setdefault(_PENDING_TASKS, [])
    call = TaskCall(name, args, queue)
    if call not in pending:
        pending.append(call)


def after_commit(session: Session, call: Callable[..., None], *args: Any) -> None:
    """Call ``call(*args)`` once this session's transaction commits; never if it rolls back."""
    session.info.setdefault(_PENDING_CALLS, []).append((call, args))


def set_task_sender(session: Session, sender: TaskSender | None) -> None:
    """Route this session's after-commit tasks elsewhere (tests collect them in a list)."""
    session.info[_SENDER] = sender


def after_commit_each(session: Session, call: Callable[[list[Any]], None], item: Any) -> None:
    """Call ``call(items)`` once this session's transaction commits, with every item given for
    ``call`` in that transaction, in order: one call per transaction, however many items (a
    round trip each would cost a batch of quick jobs one per job)."""
    batches = session.info.setdefault(_BATCHES, {})
    items = batches.get(call)
    if items is None:
        items = batches[call] = []
        after_commit(session, call, items)
    items.append(item)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released; the real commit is still to come
    session.info.pop(_BATCHES, None)
    calls = session.info.pop(_PENDING_TASKS, [])
    sender = session.info.get(_SENDER)
    if calls and sender is not None:
        sender(calls)
    for call, args in session.info.pop(_PENDING_CALLS, []):
        call(*args)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return  # only a savepoint rolled back; what was registered before it still stands
    session.info.pop(_PENDING_TASKS, None)
    session.info.pop(_PENDING_CALLS, None)
    session.info.pop(_BATCHES, None)


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean the database is unreachable, not that the query was wrong."""
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    )


def commit_with_retry(
    session: Session,
    work: Callable[[], T],
    give_up_after_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work`` and commit, again and again while the database is unreachable.

    For the step after an irreversible action (an HTTP call made, a job run): redoing the action
    would be a duplicate, so wait for Postgres instead, up to ``give_up_after_seconds``.
    """
    deadline = time.monotonic() + give_up_after_seconds
    delay = 0.25
    while True:
        try:
            result = work()
            session.commit()
            return result
        except DBAPIError as exc:
            session.rollback()
            if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.2f s", type(exc.orig), delay)
            sleep(delay)
            delay = min(delay * 2, 5.0)


def ensure_database(settings: Settings) -> bool:
    """Create the configured database if it does not exist; True when it was created."""
    url = make_url(settings.database_url).set(drivername="postgresql+psycopg2")
    name = url.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()
