"""``python -m bench``: the delivery pipeline on the real stack, next to its reference points.

Starts gunicorn, both Celery workers and beat (as in production: the delivery worker on a thread
pool) against a scratch database and a private redis-server, plus an aiohttp receiver in its own
process, and runs eleven scenarios in one go:

1. throughput: N deliveries to a fast receiver, beside (a) a raw aiohttp client POSTing the same
   signed bodies and (b) a naive one-Celery-task-per-callback sender (bench/naive/);
2. slow: M deliveries to a receiver that takes 0.5 s per request;
3. noisy: one tenant's callback never answers while another's gets K deliveries;
4. ingest: POST /v1/jobs under load from wrk, beside a trivial Flask app on the same gunicorn;
5. e2e: the user's path (API -> job -> signed callback) on ``boomerang up``, beside the stack a
   Flask + Celery tutorial builds: jobs/s, submit-to-receipt latency, ingest with workers running;
6. backlog: B deliveries waiting for a retry: worker memory, sweep time, Redis queue length;
7. retention: R attempts past retention, dropped as daily partitions beside the batched DELETE
   that pruned them before: time and WAL written;
8. fanout: one event to 100 callbacks through the outbox, without and with CEL content filters;
9. ordering: 1,000 keys x 10 events to one callback, unordered, ordered, and ordered with one
   key's receiver answering 503 for a minute: every other key's pace, and order per key;
10. search: the delivery log of 1,000,000 attempts searched by each filter of GET /v1/deliveries
    (EXPLAIN ANALYZE), with today's indexes and the ones before them;
11. dead: a healthy tenant's jobs beside twenty tenants whose receivers never answer.

Deliveries for 1-3 are made the way a finished job makes them: the real outbox
(``app.services.outbox.publish``) writes a finished job, its message and its delivery, and the
deliver task is enqueued after the commit; the workers then claim, POST and log every attempt in
Postgres exactly as in production. The backlog of scenario 5 is bulk-inserted in SQL.

Each scenario is a module of bench/scenarios/; bench/stack.py starts what they share.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.held_back import held_back, since
from bench.report import make_report, table
from bench.scenarios import SCENARIOS
from bench.sizes import SMOKE, Sizes
from bench.stack import Bench, running_bench
from tests.support import REPO

DEFAULT_JSON = REPO / "artifacts" / "bench.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line: what to run, at what size, on how many processes."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every scenario scaled down")
    parser.add_argument("--only", action="append", choices=tuple(SCENARIOS), help="repeatable")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--database", default="boomerang_bench")
    parser.add_argument(
        "--delivery-concurrency",
        type=int,
        help="BOOMERANG_DELIVERY_CONCURRENCY (default: the setting's default)",
    )
    parser.add_argument("--delivery-processes", type=int, default=2)
    parser.add_argument(
        "--tenant-attempts-per-second",
        type=int,
        default=0,
        help="BOOMERANG_TENANT_ATTEMPTS_PER_SECOND (default: 0, the ceiling lifted)",
    )
    parser.add_argument("--web-workers", type=int, default=2, help="BOOMERANG_WEB_WORKERS")
    parser.add_argument("--web-threads", type=int, default=4, help="BOOMERANG_WEB_THREADS")
    parser.add_argument("--naive-concurrency", type=int, default=8)
    parser.add_argument("--raw-concurrency", type=int, default=32)
    parser.add_argument("--ingest-concurrency", type=int, default=32)
    for name in Sizes.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, dest=f"size_{name}")
    return parser.parse_args(argv)


def sizes_for(args: argparse.Namespace) -> Sizes:
    """The full or smoke sizes, with any size given on the command line instead."""
    sizes = Sizes(**SMOKE.__dict__) if args.smoke else Sizes()
    for name in Sizes.__dataclass_fields__:
        value = getattr(args, f"size_{name}")
        if value is not None:
            setattr(sizes, name, value)
    return sizes


def run_scenario(
    bench: Bench, name: str, scenario: Callable[[Bench], dict[str, Any]]
) -> dict[str, Any]:
    """Run one scenario and print its figures; a failure becomes a problem, not an abort."""
    print(f"-- {name} ...", flush=True)
    started = time.monotonic()
    before = held_back(bench)
    try:
        result = scenario(bench)
    except Exception as exc:
        bench.problems.append(f"{name}: {type(exc).__name__}: {exc}")
        result = {"error": f"{type(exc).__name__}: {exc}"}
    put_back = since(before, held_back(bench))
    if put_back:
        # Leased and put back unsent by the shared stack's limits (not the scenarios that start
        # stacks of their own).
        result["held_back"] = put_back
    result["scenario_seconds"] = round(time.monotonic() - started, 1)
    print(f"   {json.dumps(result)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when nothing was lost and no scenario failed."""
    args = parse(argv)
    sizes = sizes_for(args)

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    log_dir = Path(tempfile.mkdtemp(prefix="boomerang-bench-"))
    results: dict[str, Any] = {}
    problems: list[str] = []
    started = time.monotonic()
    try:
        with running_bench(args, sizes, log_dir) as bench:
            for name in args.only or SCENARIOS:
                results[name] = run_scenario(bench, name, SCENARIOS[name])
            problems = bench.problems
    except KeyboardInterrupt:
        print("interrupted; stopping every process", file=sys.stderr)
        return 130
    report = make_report(
        smoke=args.smoke,
        sizes=sizes,
        total_seconds=time.monotonic() - started,
        log_dir=log_dir,
        problems=problems,
        results=results,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(
        f"{report['date']}  nproc={report['machine']['nproc']}  "
        f"memory={report['machine']['memory_gb']} GB  sizes={sizes.__dict__}"
    )
    print(table(results))
    print(f"\nJSON: {args.json}   logs: {log_dir}   total {report['total_seconds']} s")
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0
