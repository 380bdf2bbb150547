"""Multi-host tests: worker hosts made of network namespaces, which a test kills, cuts off or adds.

One network per run (``fleet_network``): a bridge on a private /24 whose address serves a private
Postgres and a private redis-server, a receiver in a namespace of its own, and the API (gunicorn)
in the root namespace. Each test gets fresh hosts (``fleet``): a namespace each, running the
jobs worker, the delivery worker and beat from the Procfile's commands.

Postgres keeps an audit (``fleet_audit``, made here, not a migration): triggers note which host
(its address, ``inet_client_addr()``) leased, settled or logged each delivery and claimed,
finished or queued again each job, and when. That is how a test knows what a dead host held, and
that a cut-off host wrote nothing.

Needs root and iproute2; without them the tests skip, unless REQUIRE_FLEET_TESTS=1 (as in CI),
when they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, create_engine, text

from bench.outbox import _PUBLISH as PUBLISH
from tests.faults.conftest import FAULT_ENV
from tests.support import REPO
from tests.support.fleet_receiver import FleetReceiver
from tests.support.netns import Namespace, Network, unavailable
from tests.support.postgres_server import PostgresServer
from tests.support.processes import start_process, stop_process
from tests.support.redis_server import RedisServer
from tests.support.settings import (
    database_name,
    make_settings,
    recreate_database,
    worker_number,
)
from tests.support.stack import Stack

FIGURES_FILE = Path(os.environ.get("TEST_FLEET_FIGURES", REPO / "artifacts" / "fleet.jsonl"))

# The fault tests' short schedules and leases (5 s), so a lost host heals in seconds.
FLEET_ENV = {**FAULT_ENV, "BOOMERANG_LOG_FORMAT": "text"}
LEASE_SECONDS = float(FAULT_ENV["BOOMERANG_DELIVERY_LEASE_SECONDS"])
HOST_PROCESSES = ("jobs", "deliveries", "beat")

# Who changed what, and when: one row per delivery leased or settled, attempt logged, job
# claimed, finished or queued again. Statement-level triggers, so a batch costs one INSERT.
AUDIT_SQL = """
CREATE TABLE fleet_audit (
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    host inet DEFAULT inet_client_addr(),
    kind text NOT NULL,
    item uuid NOT NULL,
    lease uuid
);
CREATE FUNCTION fleet_audit_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_audit (kind, item, lease)
    SELECT 'delivery.lease', n.id, n.lease_id
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.lease_id IS NOT NULL AND n.lease_id IS DISTINCT FROM o.lease_id
    UNION ALL
    SELECT 'delivery.settle', n.id, o.lease_id
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.attempt_count > o.attempt_count;
    RETURN NULL;
END $$;
CREATE TRIGGER fleet_audit_delivery AFTER UPDATE ON delivery
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_audit_delivery();
CREATE FUNCTION fleet_audit_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_audit (kind, item) SELECT 'attempt', delivery_id FROM new_rows;
    RETURN NULL;
END $$;
CREATE TRIGGER fleet_audit_attempt AFTER INSERT ON delivery_attempt
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_audit_attempt();
CREATE FUNCTION fleet_audit_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_audit (kind, item, lease)
    SELECT CASE
               WHEN n.status = 'running' THEN 'job.claim'
               WHEN n.status = 'queued' THEN 'job.requeue'
               ELSE 'job.finish'
           END,
           n.id, coalesce(n.lease_id, o.lease_id)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (n.status = 'running' AND n.lease_id IS DISTINCT FROM o.lease_id)
       OR (o.status = 'running' AND n.status <> 'running');
    RETURN NULL;
END $$;
CREATE TRIGGER fleet_audit_job AFTER UPDATE ON job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_audit_job();
"""


@dataclass
class Host:
    """One worker host: a namespace and the service's worker processes in it."""

    name: str
    namespace: Namespace
    log_dir: Path
    env: dict[str, str]
    # One delivery process a host: scale-out is counted in hosts.
    delivery_processes: int = 1
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """Its address on the bridge: what Postgres and the receiver see it as."""
        return self.namespace.address

    def commands(self) -> dict[str, list[str]]:
        """The jobs worker, the delivery worker and beat, as the stack runs them, each with a
        node name of this host's (every namespace shares the machine's hostname)."""
        stack = Stack(env={}, log_dir=self.log_dir, delivery_processes=self.delivery_processes)
        commands = {}
        for kind in HOST_PROCESSES:
            command = list(stack.commands()[kind])
            if "-n" in command:
                command[command.index("-n") + 1] = f"{kind}@{self.name}"
            commands[kind] = self.namespace.command(command)
        return commands

    def start(self, kinds: tuple[str, ...] = HOST_PROCESSES) -> None:
        """Start its processes (or some of them); ``wait_ready`` waits for them."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "BOOMERANG_METRICS_DIR": str(self.log_dir / "metrics")}
        for kind, command in self.commands().items():
            if kind in kinds:
                self.processes[kind] = start_process(command, env, self.log_dir / f"{kind}.log")

    def wait_ready(self, timeout: float = 90) -> None:
        """Block until its workers logged that they are ready (beat needs no wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for kind, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{self.name} {kind} exited early:\n{self.log(kind)}")
            workers = [kind for kind in ("jobs", "deliveries") if kind in self.processes]
            if all(" ready." in self.log(kind) for kind in workers):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def ready_at(self, kind: str = "deliveries") -> float:
        """When one of its workers said it was ready (epoch), from its log line's time."""
        line = next(line for line in self.log(kind).splitlines() if line.endswith(" ready."))
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    def log(self, kind: str) -> str:
        """Everything one of its processes wrote."""
        path = self.log_dir / f"{kind}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> int:
        """SIGKILL every process on the host at once, as when it loses power; how many."""
        killed = self.namespace.kill_all()
        for process in self.processes.values():
            stop_process(process, timeout=5)  # reaps them; they are dead already
        return killed

    def cut_off(self) -> None:
        """Partition it: every packet to or from it is dropped until ``reconnect``."""
        self.namespace.cut_off()

    def reconnect(self) -> None:
        """End the partition."""
        self.namespace.reconnect()


@dataclass
class FleetNetwork:
    """What every test shares: the network, Postgres, Redis, the receiver and the API."""

    network: Network
    postgres: PostgresServer
    redis_server: RedisServer
    receiver: FleetReceiver
    api: Stack
    log_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """Settings for the hosts' processes: the servers on the bridge."""
        return {
            **FLEET_ENV,
            "DATABASE_URL": self.api.database_url,
            "REDIS_URL": self.redis_server.url,
        }


@dataclass
class Account:
    """The test's tenant, and the callback it registered."""

    api_key: str
    tenant_id: str
    path: str = ""
    callback_id: str = ""


@dataclass
class Tally:
    """What reached the receiver for one callback path, against the jobs submitted."""

    submitted: int
    received: int
    unique: int
    duplicates: int
    lost: int
    jobs_finished_twice: int


class Fleet:
    """The hosts of one test and helpers to drive work through them."""

    def __init__(self, shared: FleetNetwork, log_dir: Path, account: Account) -> None:
        self.shared = shared
        self.log_dir = log_dir
        self.account = account
        self.hosts: list[Host] = []
        # The API the test submits through: the shared one, unless a test brings its own.
        self.web: Stack = shared.api
        self._next_host = 1
        self._engine: Engine | None = None

    @property
    def receiver(self) -> FleetReceiver:
        return self.shared.receiver

    def add_host(
        self, wait: bool = True, kinds: tuple[str, ...] = HOST_PROCESSES, **env: str
    ) -> Host:
        """A new host (namespace and processes, all or ``kinds``), ready unless ``wait`` is
        False."""
        number = self._next_host
        self._next_host += 1
        namespace = self.shared.network.add(f"h{number}", 10 + number)
        host = Host(f"h{number}", namespace, self.log_dir / f"h{number}", self.shared.env | env)
        self.hosts.append(host)
        host.start(kinds)
        if wait:
            host.wait_ready()
        return host

    def add_hosts(
        self, count: int, kinds: tuple[str, ...] = HOST_PROCESSES, **env: str
    ) -> list[Host]:
        """``count`` hosts started side by side, all ready."""
        hosts = [self.add_host(wait=False, kinds=kinds, **env) for _ in range(count)]
        for host in hosts:
            host.wait_ready()
        return hosts

    def remove(self) -> None:
        """Kill every host and remove its namespace."""
        for host in self.hosts:
            host.namespace.reconnect()
            host.kill()
            self.shared.network.delete(host.namespace)
        self.hosts.clear()  # so a test that removes its hosts early leaves nothing to teardown
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def host_at(self, address: str) -> Host:
        """The host with this address."""
        return next(host for host in self.hosts if host.address == address)

    # -- the API -----------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.account.api_key}"}
        return requests.request(
            method, self.web.base_url + path, headers=headers, timeout=15, **kwargs
        )

    def register(self, path: str, **options: Any) -> None:
        """Register the receiver's ``path`` as the tenant's callback."""
        response = self.api(
            "POST", "/v1/callbacks", json={"url": self.receiver.url(path), **options}
        )
        assert response.status_code == 201, response.text
        self.account.path = path
        self.account.callback_id = response.json()["id"]

    def submit(self, count: int, job_type: str = "echo", **input_: Any) -> list[str]:
        """Submit ``count`` jobs through the API, a few at a time; their ids."""

        def one(number: int) -> str:
            for _ in range(50):
                try:
                    body = {"type": job_type, "input": input_ or {"n": number}}
                    response = self.api("POST", "/v1/jobs", json=body)
                    if response.status_code == 202:
                        return response.json()["id"]
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            raise AssertionError(f"could not submit job {number}")

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))

    def publish(self, count: int) -> list[str]:
        """``count`` finished echo jobs with their events and pending deliveries to the
        callback, written in one statement as the outbox writes them (the API would take
        longer than the delivery it feeds); their job ids. No wake is sent: the next sweep
        (every 0.5 s) wakes a drain."""
        rows = self.sql(
            PUBLISH,
            tenants=[self.account.tenant_id] * count,
            callbacks=[self.account.callback_id] * count,
        )
        message_ids = [str(row[0]) for row in rows]
        return [
            str(row[0])
            for row in self.sql(
                "SELECT job_id FROM message WHERE id = ANY(CAST(:ids AS uuid[]))", ids=message_ids
            )
        ]

    def pending(self) -> int:
        """The callback's deliveries not yet succeeded."""
        return self.sql(
            "SELECT count(*) FROM delivery WHERE callback_id = :id AND status = 'pending'",
            id=self.account.callback_id,
        )[0][0]

    def wait_until_unique(self, count: int, timeout: float = 120) -> None:
        """Block until ``count`` distinct events were accepted at the callback (cheap to poll
        while thousands arrive)."""
        deadline = time.monotonic() + timeout
        while self.receiver.stats(self.account.path)["unique"] < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} events arrived in {timeout}s")
            time.sleep(0.2)

    # -- what happened -----------------------------------------------------------------------

    def sql(self, statement: str, **params: object) -> list:
        """One committed statement on the fleet's database; its rows."""
        if self._engine is None:
            url = self.shared.api.database_url
            self._engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        with self._engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    def audit(self, kind: str, since: float = 0.0) -> list[tuple[str, str, str | None, float]]:
        """The audit's rows of one kind since an epoch time: (host, item, lease, epoch at)."""
        return [
            (str(row[0]), str(row[1]), str(row[2]) if row[2] else None, float(row[3]))
            for row in self.sql(
                "SELECT host, item, lease, extract(epoch FROM at) FROM fleet_audit "
                "WHERE kind = :kind AND at >= to_timestamp(:since) ORDER BY at",
                kind=kind,
                since=since,
            )
        ]

    def wait_until_received(self, job_ids: list[str], timeout: float = 120) -> float:
        """Block until every job's event was accepted at the callback; the epoch time of the
        last one."""
        expected = set(job_ids)
        deadline = time.monotonic() + timeout
        while True:
            accepted = [
                r for r in self.receiver.records(self.account.path) if 200 <= r["status"] < 300
            ]
            if expected <= {r["job_id"] for r in accepted}:
                return max(r["at"] for r in accepted if r["job_id"] in expected)
            if time.monotonic() > deadline:
                missing = expected - {r["job_id"] for r in accepted}
                raise AssertionError(f"{len(missing)} of {len(expected)} jobs never arrived")
            time.sleep(0.25)

    def tally(self, job_ids: list[str]) -> Tally:
        """Submitted, received, unique, duplicates and lost at the callback, and the jobs the
        database saw finish more than once. Every copy of one job's event must carry one
        webhook-id."""
        records = self.receiver.records(self.account.path)
        accepted = [r for r in records if 200 <= r["status"] < 300]
        ids_by_job: dict[str, set[str]] = defaultdict(set)
        for record in records:
            ids_by_job[record["job_id"]].add(record["webhook_id"])
        assert all(len(ids) == 1 for ids in ids_by_job.values()), "a job with two webhook-ids"
        unique = len({r["webhook_id"] for r in accepted})
        finishes = Counter(item for _, item, _, _ in self.audit("job.finish"))
        return Tally(
            submitted=len(job_ids),
            received=len(accepted),
            unique=unique,
            duplicates=len(accepted) - unique,
            lost=len(set(job_ids) - {r["job_id"] for r in accepted}),
            jobs_finished_twice=sum(1 for job in job_ids if finishes[job] > 1),
        )

    def assert_settled(self, timeout: float = 30) -> None:
        """Every delivery ends succeeded, no lease is left, every job ended exactly once."""

        def leftovers() -> int:
            return self.sql(
                "SELECT (SELECT count(*) FROM delivery "
                "        WHERE status <> 'succeeded' OR locked_until > now())"
                "     + (SELECT count(*) FROM job WHERE status IN ('queued', 'running'))"
            )[0][0]

        deadline = time.monotonic() + timeout
        while leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leftovers() == 0
        ends = self.sql(
            "SELECT job_id, count(*) FROM message "
            "WHERE event_type IN ('job.succeeded', 'job.failed') GROUP BY job_id "
            "HAVING count(*) > 1"
        )
        assert ends == [], f"jobs that ended twice: {ends}"


def wait_for(predicate, timeout: float, message: str):
    """Poll ``predicate`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


def record_figures(name: str, figures: Tally, recovery_seconds: float, **extra: Any) -> None:
    """Append one scenario's figures to the fleet figures file, and print them."""
    row = {
        "test": name,
        **figures.__dict__,
        "recovery_seconds": round(recovery_seconds, 2),
        **extra,
    }
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row))


@pytest.fixture(scope="session")
def fleet_network(tmp_path_factory, worker_id) -> Iterator[FleetNetwork]:
    """The network and the servers every host shares, made once and always removed."""
    reason = unavailable()
    if reason is not None:
        if os.environ.get("REQUIRE_FLEET_TESTS") == "1":
            pytest.fail(f"REQUIRE_FLEET_TESTS=1 but {reason}")
        pytest.skip(reason)
    log_dir = tmp_path_factory.mktemp("fleet")
    Network.remove_stale()
    network = Network.create()
    started: list[Any] = []
    try:
        postgres = PostgresServer(log_dir, host=network.address, trusted_network=network.cidr)
        postgres.start()
        started.append(postgres)
        redis_server = RedisServer(log_dir, host=network.address)
        redis_server.start()
        started.append(redis_server)
        database_url = f"{postgres.url}/{database_name('fleet', worker_number(worker_id))}"
        recreate_database(make_settings("fleet", 0, DATABASE_URL=database_url))
        api = Stack(
            env={**FLEET_ENV, "DATABASE_URL": database_url, "REDIS_URL": redis_server.url},
            log_dir=log_dir,
        )
        api.sql(AUDIT_SQL)
        receiver_ns = network.add("r", 2)
        receiver = FleetReceiver(receiver_ns.address, 9000, log_dir)
        receiver.start(receiver_ns.command([]))
        started.append(receiver)
        api.start("web")
        started.append(api)
        yield FleetNetwork(network, postgres, redis_server, receiver, api, log_dir)
    finally:
        for server in reversed(started):
            server.stop()
        network.remove()


@pytest.fixture
def fleet(fleet_network: FleetNetwork, tmp_path: Path) -> Iterator[Fleet]:
    """A fresh tenant and no hosts yet (``add_hosts``); every host is removed afterwards.

    The database is shared with the earlier tests (each left everything settled); Redis is
    flushed, the receiver and the audit emptied."""
    fleet_network.receiver.reset()
    fleet_network.redis_server.flushall()
    fleet_network.api.sql("TRUNCATE fleet_audit")
    created = fleet_network.api.create_tenant(tmp_path.name[:40])
    fleet = Fleet(fleet_network, tmp_path, Account(created["api_key"], created["tenant_id"]))
    try:
        yield fleet
    finally:
        fleet.remove()
