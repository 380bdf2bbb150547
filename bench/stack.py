"""What every scenario works with: the real stack, a connection to its database, the receiver in
its own process, and where losses are written down."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from app.db import make_engine, make_session_factory
from app.queues import Producer
from bench.naive.app import TABLE_DDL
from bench.processes import Processes, wait_http
from bench.receiver_client import ReceiverClient
from bench.sizes import Sizes
from config.settings import Settings
from tests.support.processes import free_port
from tests.support.stack import Stack, running_stack

# How the receiver answers under /slow/ and /hang/ (long past any delivery timeout).
SLOW_SECONDS = 0.5
HANG_SECONDS = 600


@dataclass
class Bench:
    """One benchmark run: its options and sizes, the stack and everything around it."""

    args: argparse.Namespace
    sizes: Sizes
    stack: Stack
    settings: Settings
    engine: Engine
    session_factory: sessionmaker
    producer: Producer
    processes: Processes
    receiver: ReceiverClient
    problems: list[str] = field(default_factory=list)

    def sql(self, statement: str, **params: Any) -> list:
        """Run one statement, committed; its rows, if any."""
        with self.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []


def stack_env(args: argparse.Namespace) -> dict[str, str]:
    """Production settings, but for local receivers, the size asked for and no rate limit."""
    env = {
        "BOOMERANG_ALLOW_PRIVATE_NETWORKS": "true",
        # The scenarios measure the engine, not the per-tenant limits that protect others: the
        # API's rate limit and (unless asked for) the ceiling on one tenant's outbound attempts
        # are lifted.
        "BOOMERANG_RATE_LIMIT": "10000000 per minute",
        "BOOMERANG_TENANT_ATTEMPTS_PER_SECOND": str(args.tenant_attempts_per_second),
        "BOOMERANG_WEB_WORKERS": str(args.web_workers),
        "BOOMERANG_WEB_THREADS": str(args.web_threads),
    }
    if args.delivery_concurrency:
        env["BOOMERANG_DELIVERY_CONCURRENCY"] = str(args.delivery_concurrency)
    if args.smoke:
        # The noisy neighbour holds each connection until our timeout: keep it short.
        env |= {
            "BOOMERANG_CONNECT_TIMEOUT_SECONDS": "1",
            "BOOMERANG_READ_TIMEOUT_SECONDS": "2",
            "BOOMERANG_TOTAL_TIMEOUT_SECONDS": "3",
        }
    return env


def start_receiver(processes: Processes) -> ReceiverClient:
    """The receiver in a process of its own: 201 to every POST, late under /slow/ and never in
    time under /hang/."""
    port = free_port()
    command = [sys.executable, "-m", "app.receiver", "--port", str(port), "--status", "201"]
    command += ["--delay", f"/slow/={SLOW_SECONDS}", "--delay", f"/hang/={HANG_SECONDS}", "--quiet"]
    # As many connections as the benchmark's senders open at once, and then some.
    command += ["--backlog", "2048"]
    process = processes.start("receiver", command, {})
    receiver = ReceiverClient(port)
    wait_http(receiver.url("/_health"), 30, process)
    return receiver


@contextlib.contextmanager
def running_bench(args: argparse.Namespace, sizes: Sizes, log_dir: Path) -> Iterator[Bench]:
    """The stack on a scratch database and a private Redis, with the delivery processes asked
    for, and the receiver; every process stopped on the way out."""
    with running_stack(
        args.database, log_dir, stack_env(args), delivery_processes=args.delivery_processes
    ) as stack:
        settings = Settings.from_env(stack.env)
        producer = Producer(settings)
        engine = make_engine(settings, pool_size=4, max_overflow=4)
        processes = Processes(log_dir)
        try:
            bench = Bench(
                args=args,
                sizes=sizes,
                stack=stack,
                settings=settings,
                engine=engine,
                session_factory=make_session_factory(engine, producer.sender()),
                producer=producer,
                processes=processes,
                receiver=start_receiver(processes),
            )
            bench.sql(TABLE_DDL)
            yield bench
        finally:
            processes.stop_all()
            engine.dispose()
