"""Time from `POST /v1/jobs` to callback receipt for `echo` jobs, one at a time, on the real stack.

Starts gunicorn, both Celery workers and beat against a scratch database, submits N echo jobs
sequentially (each waits for its callback before the next is sent), and prints percentiles.

    .venv/bin/python -m bench.echo_latency [--jobs 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests

from app.receiver import Receiver
from bench.figures import percentile
from tests.support.stack import running_stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()

    # Production timeouts and retries: only local receivers are allowed on top of the defaults.
    env = {"BOOMERANG_ALLOW_PRIVATE_NETWORKS": "true"}
    log_dir = Path(tempfile.mkdtemp(prefix="boomerang-bench-"))
    with (
        Receiver() as receiver,
        running_stack("boomerang_bench", log_dir, env, redis_db=15) as stack,
    ):
        key = stack.create_tenant("bench")["api_key"]
        headers = {"Authorization": f"Bearer {key}"}
        session = requests.Session()
        latencies = []
        for number in range(args.jobs):
            started = time.time()
            response = session.post(
                f"{stack.base_url}/v1/jobs",
                headers=headers,
                timeout=10,
                json={
                    "type": "echo",
                    "input": {"n": number},
                    "callback_url": receiver.url("/bench"),
                },
            )
            response.raise_for_status()
            arrived = receiver.wait_for(number + 1, "/bench", timeout=30)[-1]
            latencies.append((arrived.at - started) * 1000)
        figures = {
            "jobs": len(latencies),
            "p50_ms": round(statistics.median(latencies), 1),
            "p90_ms": round(percentile(latencies, 0.90), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "min_ms": round(min(latencies), 1),
            "max_ms": round(max(latencies), 1),
        }
        print("echo job: submission -> signed callback received")
        for name, value in figures.items():
            print(f"  {name:>7}: {value}")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
