"""``boomerang up`` as a newcomer runs it: by its full path, its venv not on the PATH, on the
port a Procfile host gives in ``PORT``. Every process must start from the same installation,
and a job must go all the way through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import requests

from tests.support import BIN
from tests.support.processes import free_port, stop_process
from tests.support.redis_server import RedisServer
from tests.support.settings import (
    PG_ROOT,
    database_name,
    make_settings,
    recreate_database,
    worker_number,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PROCESSES = ("web", "stream", "worker", "delivery", "beat", "flower", "front")


def test_up_by_its_full_path_without_the_venv_on_path_serves_on_port(worker_id, tmp_path, receiver):
    database = database_name("up", worker_number(worker_id))
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    port = free_port()
    env = {
        # No virtualenv on the PATH: only the system's directories.
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "PORT": str(port),
        "DATABASE_URL": f"{PG_ROOT}/{database}",
        "REDIS_URL": redis_server.url,
        "BOOMERANG_STREAM_PORT": str(free_port()),
        "BOOMERANG_FLOWER_PORT": str(free_port()),
        "BOOMERANG_METRICS_DIR": str(tmp_path / "metrics"),
        "BOOMERANG_ALLOW_PRIVATE_NETWORKS": "true",
        "BOOMERANG_RETRY_JITTER": "0",
    }
    recreate_database(make_settings(database, 0, BOOMERANG_ALLOW_PRIVATE_NETWORKS="true"))
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen(
            [str(BIN / "boomerang"), "up"],
            cwd=tmp_path,  # not the repository: nothing may be found relative to it
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, up, log_path)
        # What it prints a newcomer to do next works as printed, from any directory.
        printed = log_path.read_text(errors="replace")
        assert f"Portal   {base}/portal/" in printed
        steps = printed.split("Next, in another terminal:\n", 1)[1].splitlines()
        create = steps[0].split("#")[0].split()
        assert create[0] == str(BIN / "boomerang"), steps[0]
        tenant = json.loads(run(create, env).stdout.strip().splitlines()[-1])
        assert steps[1].strip() == "export KEY=bmr_..."
        curl = "\n".join(steps[2:5])
        submitted = json.loads(run(["bash", "-c", curl], {**env, "KEY": tenant["api_key"]}).stdout)
        assert submitted["type"] == "echo" and submitted["status"] in {
            "queued",
            "running",
            "succeeded",
        }
        headers = {"Authorization": f"Bearer {tenant['api_key']}"}
        job = requests.post(
            f"{base}/v1/jobs",
            json={"type": "echo", "input": {"n": 1}, "callback_url": receiver.url("/up")},
            headers=headers,
            timeout=10,
        )
        assert job.status_code == 202, job.text
        receiver.wait_for(1, "/up", timeout=60)
        assert requests.get(f"{base}/stream/healthz", timeout=5).status_code == 200

        output = log_path.read_text(errors="replace")
        assert "not found" not in output
        for name in PROCESSES:
            assert f"system   | {name} started" in output, output[-3000:]
        assert " stopped (rc=" not in output, output[-3000:]  # honcho: a process ended
        assert up.poll() is None, output[-3000:]
    finally:
        stop_process(up, signal.SIGTERM, timeout=30)
        redis_server.stop()


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd="/", check=True, capture_output=True, text=True, timeout=60
    )


def wait_until_ready(base: str, up: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise AssertionError(f"boomerang up exited:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"boomerang up never became ready:\n{log_path.read_text()[-3000:]}")
