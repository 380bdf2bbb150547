"""Grey failures on the real stack: nothing is down, something is subtly wrong. A host whose
clock runs fast; receivers that never read or trickle their answer. After each: nothing lost,
nothing sent twice, nobody else held up, and the figures recorded."""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.faults.conftest import (
    FAULT_ENV,
    Account,
    FaultStack,
    record_figures,
    record_row,
    tally,
    wait_until_received,
)
from tests.faults.test_faults import wait_for
from tests.support.settings import database_name, worker_number
from tests.support.stack import running_stack

pytestmark = pytest.mark.faults

SKEW_SECONDS = 300
RETRY_SECONDS = 3.0
# The receiver's clock and Postgres' are this host's; what is left is a query's round trip.
CLOCK_TOLERANCE_SECONDS = 0.05


class SkewedStack(FaultStack):
    """A FaultStack with a second delivery worker whose host clock runs five minutes fast."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_env["fast-deliveries"] = {"BOOMERANG_CLOCK_SKEW_SECONDS": str(SKEW_SECONDS)}

    def commands(self) -> dict[str, list[str]]:
        commands = super().commands()
        fast = list(commands["deliveries"])
        fast[fast.index("-n") + 1] = f"fast-deliveries-{self.web_port}@%h"
        return {**commands, "fast-deliveries": fast}


@pytest.fixture
def skewed_stack(worker_id, tmp_path):
    """The service with a normal and a fast delivery worker, and a fixed retry delay so an early
    retry shows at the receiver."""
    env = {**FAULT_ENV, "BOOMERANG_RETRY_SCHEDULE": "3,3,3", "BOOMERANG_RETRY_JITTER": "0"}
    database = database_name("grey", worker_number(worker_id))
    with running_stack(database, tmp_path, env, kind=SkewedStack) as stack:
        yield stack


def every_attempt_logged(stack, deliveries: int, attempts: int, timeout: float = 15) -> list:
    """The attempt count of each delivery, once each has ``attempts`` logged or the time is up.

    A worker logs a batch's attempts once the batch's requests are answered: the receiver can
    have the last retry a moment before the log has it."""
    deadline = time.monotonic() + timeout
    while True:
        logged = stack.sql("SELECT count(*) FROM delivery_attempt GROUP BY delivery_id")
        done = len(logged) == deliveries and all(count >= attempts for (count,) in logged)
        if done or time.monotonic() > deadline:
            return logged
        time.sleep(0.2)


def test_a_delivery_worker_five_minutes_fast_steals_no_lease_and_sends_no_early_retry(
    skewed_stack, receiver
):
    stack = skewed_stack
    created = stack.create_tenant("skew")
    account = Account(api_key=created["api_key"], signing_secret=created["signing_secret"])
    # Each first attempt is held for a second (a lease a fast clock would see as long expired),
    # then fails; the retry succeeds.
    first_answer_seconds = 1.0
    receiver.answer("/skew", 500, 200, per_message=True, delays=[first_answer_seconds, 0.0])
    url = receiver.url("/skew")
    stack.register(account, url)

    # The fast worker takes the first 20 alone, so it surely takes part (beside a normal worker
    # up from the start, a busy host could leave it none). The other 80 go to both at once, and
    # each must leave the other's leases alone.
    stack.stop("deliveries")
    started = time.monotonic()
    job_ids = stack.submit(account, 20)
    receiver.wait_for(1, "/skew", timeout=30)
    stack.start("deliveries")
    job_ids += stack.submit(account, 80)
    wait_until_received(receiver, "/skew", job_ids, timeout=60)
    recover = time.monotonic() - started

    arrivals: dict[str, list[float]] = defaultdict(list)
    for request in receiver.received("/skew"):
        arrivals[request.webhook_id].append(request.at)
    sends = Counter({webhook: len(times) for webhook, times in arrivals.items()})
    # A retry may be sent no sooner than its delay after the failed attempt was answered.
    early = {
        webhook: round(times[1] - times[0] - first_answer_seconds, 3)
        for webhook, times in arrivals.items()
        if len(times) > 1
        and times[1] - times[0] - first_answer_seconds < RETRY_SECONDS - CLOCK_TOLERANCE_SECONDS
    }
    gaps = [
        times[1] - times[0] - first_answer_seconds for times in arrivals.values() if len(times) > 1
    ]
    logged = every_attempt_logged(stack, len(job_ids), attempts=2)
    fast_log = stack.log("fast-deliveries")
    fast_failures = fast_log.count("receiver answered 500")

    figures = tally(receiver, "/skew", account.callback_secrets[url], job_ids)
    record_figures(
        f"one delivery worker's clock {SKEW_SECONDS} s fast",
        figures,
        recover,
        sent_more_than_twice=sum(1 for count in sends.values() if count > 2),
        logged_attempts_other_than_two=sum(1 for (count,) in logged if count != 2),
        early_retries=len(early),
        min_retry_gap_seconds=round(min(gaps), 3),
        retry_delay_seconds=RETRY_SECONDS,
        attempts_failed_by_the_fast_worker=fast_failures,
        attempts_failed_by_the_normal_worker=stack.log("deliveries").count("receiver answered 500"),
    )
    assert "ahead of Postgres" in fast_log  # the fast host noticed, and used Postgres' time
    assert fast_failures > 0  # and it took part
    assert figures.lost == 0
    assert figures.bad_signatures == 0
    assert figures.unique == figures.submitted
    assert figures.duplicates_with_same_id == 0
    # Each attempt sent once: the failed one, then the retry, at the receiver and in the log.
    assert set(sends.values()) == {2}, sends.most_common(3)
    assert len(logged) == len(job_ids)
    assert {count for (count,) in logged} == {2}
    assert early == {}


class RawServer:
    """A listening socket on loopback that hands each connection to ``_serve`` on a thread."""

    path = "/raw"
    receive_buffer: int | None = None

    def __init__(self) -> None:
        self.socket = socket.socket()
        if self.receive_buffer is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(256)
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            if self._closed.is_set():
                connection.close()
                return
            self._serve(connection)

    def _serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()
        self.socket.close()


class SilentServer(RawServer):
    """Accepts every connection and never reads a byte; its receive buffer is kept small so a
    large POST has little room to land in."""

    path = "/silent"
    receive_buffer = 4096

    def __init__(self) -> None:
        self.held: list[socket.socket] = []
        super().__init__()

    def _serve(self, connection: socket.socket) -> None:
        self.held.append(connection)  # held open, never read

    def close(self) -> None:
        super().close()
        for connection in self.held:
            connection.close()


class TrickleServer(RawServer):
    """Reads the request, then answers one byte every half second, without end."""

    path = "/trickle"

    def __init__(self, every_seconds: float = 0.5) -> None:
        self.every_seconds = every_seconds
        # How long each client held on before hanging up (seconds from the request's end).
        self.held_for: list[float] = []
        self._lock = threading.Lock()
        super().__init__()

    def _serve(self, connection: socket.socket) -> None:
        threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                body += chunk
            started = time.monotonic()
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000000
            try:
                for byte in answer:
                    connection.sendall(bytes([byte]))
                    if self._closed.wait(self.every_seconds):
                        return
            except OSError:
                with self._lock:
                    self.held_for.append(time.monotonic() - started)


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def trickle_server():
    server = TrickleServer()
    yield server
    server.close()


def test_receivers_that_never_read_or_trickle_end_at_the_deadline_and_delay_no_one_else(
    fault_stack, account, receiver, silent_server, trickle_server
):
    total_timeout = float(FAULT_ENV["BOOMERANG_TOTAL_TIMEOUT_SECONDS"])
    healthy = receiver.url("/healthy")
    hostile = {"never reads": silent_server.url, "trickles": trickle_server.url}
    for url in (healthy, *hostile.values()):
        fault_stack.register(account, url)

    # Bodies of some 400 kB, far more than the silent server's receive buffer: whether the POST
    # stalls in its body or in the wait for an answer, a timeout must end it.
    count = 20
    started = time.monotonic()
    job_ids = fault_stack.submit(account, count, input_={"pad": "x" * 200_000})
    wait_until_received(receiver, "/healthy", job_ids, timeout=60)
    recover = time.monotonic() - started

    def first_attempts(url: str) -> int:
        return fault_stack.sql(
            "SELECT count(DISTINCT d.id) FROM delivery_attempt a "
            "JOIN delivery d ON d.id = a.delivery_id WHERE d.url = :url",
            url=url,
        )[0][0]

    wait_for(
        lambda: all(first_attempts(url) == count for url in hostile.values()),
        timeout=60,
        message="every hostile delivery's first attempt",
    )
    # From each job's end to its event's arrival at the healthy receiver.
    finished = dict(
        fault_stack.sql(
            "SELECT id::text, extract(epoch FROM finished_at)::float FROM job "
            "WHERE id::text = ANY(:ids)",
            ids=job_ids,
        )
    )
    latencies = [
        request.at - finished[request.json()["data"]["id"]]
        for request in receiver.received("/healthy")
        if request.accepted
    ]
    # Held behind a hostile delivery, a healthy one would wait the whole deadline; the half
    # second left is for a busy host to write 400 kB.
    healthy_bound = total_timeout - 0.5
    figures = tally(receiver, "/healthy", account.callback_secrets[healthy], job_ids)
    record_figures(
        "healthy receiver beside one that never reads and one that trickles",
        figures,
        recover,
        answered_within_bound=sum(1 for latency in latencies if latency <= healthy_bound),
        bound_seconds=healthy_bound,
        max_latency_seconds=round(max(latencies), 3),
    )
    assert figures.lost == 0
    assert figures.unique == figures.submitted
    assert figures.bad_signatures == 0
    assert max(latencies) <= healthy_bound

    for name, url in hostile.items():
        attempts = fault_stack.sql(
            "SELECT a.duration_ms, a.error FROM delivery_attempt a "
            "JOIN delivery d ON d.id = a.delivery_id WHERE d.url = :url",
            url=url,
        )
        durations = [duration / 1000 for duration, _ in attempts]
        errors = Counter(error for _, error in attempts)
        row = {
            "test": f"receiver that {name}",
            "attempts": len(attempts),
            "ended_within_deadline": sum(1 for d in durations if d <= total_timeout + 1.0),
            "deadline_seconds": total_timeout,
            "min_seconds": round(min(durations), 3),
            "max_seconds": round(max(durations), 3),
            "errors": dict(errors),
        }
        record_row(row)
        assert all(d <= total_timeout + 1.0 for d in durations), row  # a loaded loop's lag
        assert not any(error is None for error in errors), row  # none counted as delivered
    # The trickler saw every client hang up at the deadline, not after its million bytes. It
    # notices only when a send fails: the second one after the hang-up (the first draws the RST).
    noticed_within = 2 * trickle_server.every_seconds + 0.5
    assert trickle_server.held_for
    assert max(trickle_server.held_for) <= total_timeout + noticed_within


def process_tree(roots: list[int]) -> set[int]:
    """The pids of ``roots`` and every process descended from them."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    tree = set(roots)
    grown = True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return tree


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` until the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazily: a process that is still exiting may hold a file there for a moment.
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> int:
    """Write a file in ``directory`` until the disk is full; the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(directory / "filler", "wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
                if len(chunk) < 512:
                    return written


def test_a_full_metrics_disk_costs_metrics_not_deliveries(worker_id, tmp_path, receiver):
    # The stack counts in log_dir/metrics: make that a tiny disk, and fill it once it started.
    with tiny_tmpfs(tmp_path / "metrics") as metrics_dir:
        database = database_name("grey", worker_number(worker_id))
        with running_stack(database, tmp_path, FAULT_ENV, kind=FaultStack) as stack:
            created = stack.create_tenant("full-disk")
            account = Account(api_key=created["api_key"], signing_secret=created["signing_secret"])
            url = receiver.url("/full")
            stack.register(account, url)
            # Some processes have counted already (their files exist and may grow), the others
            # will make theirs on the full disk.
            warm_up = stack.submit(account, 10)
            wait_until_received(receiver, "/full", warm_up, timeout=30)
            processes_before = process_tree([p.pid for p in stack.processes.values()])
            filled = fill(metrics_dir)
            free_bytes = shutil.disk_usage(metrics_dir).free

            count = 200
            started = time.monotonic()
            job_ids = stack.submit(account, count)
            wait_until_received(receiver, "/full", job_ids, timeout=60)
            recover = time.monotonic() - started

            scrape = requests.get(stack.base_url + "/metrics", timeout=10)
            alive = {name: p.poll() is None for name, p in stack.processes.items()}
            processes_after = process_tree([p.pid for p in stack.processes.values()])
            died = processes_before - processes_after
            signalled = {name: stack.log(name).count("SIGBUS") for name in stack.processes}

            figures = tally(receiver, "/full", account.callback_secrets[url], warm_up + job_ids)
            record_figures(
                "metrics directory's disk full",
                figures,
                recover,
                metrics_disk_filled_bytes=filled,
                metrics_disk_free_bytes=free_bytes,
                metrics_status=scrape.status_code,
                processes_alive=sum(alive.values()),
                processes=len(alive),
                processes_died=len(died),
            )
            assert figures.lost == 0
            assert figures.unique == figures.submitted
            assert figures.bad_signatures == 0
            assert scrape.status_code == 200
            assert all(alive.values()), alive
            assert died == set(), "a process of the stack died (SIGBUS?)"
            assert not any(signalled.values()), signalled
