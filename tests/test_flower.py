"""``boomerang flower`` runs the real Flower, and never without a login."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port
from tests.support.sentinel_servers import SentinelGroup

BOOMERANG = Path(sys.executable).parent / "boomerang"
READY_WITHIN_SECONDS = 12


class Flower:
    """A ``boomerang flower`` subprocess whose output is collected as it comes."""

    def __init__(self, env: dict[str, str], port: int):
        self.port = port
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [str(BOOMERANG), "flower"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._collect, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, stream) -> None:
        for line in stream:
            self.output.append(line)

    def get(self, credentials: str | None = None, path: str = "/") -> int:
        """The status of ``GET path``."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if credentials:
            token = base64.b64encode(credentials.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"flower exited ({self.process.returncode}):\n{''.join(self.output)}")
            try:
                if condition():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.1)
        pytest.fail(f"flower: no {what} within {READY_WITHIN_SECONDS} s:\n{''.join(self.output)}")

    def stop(self) -> str:
        """Stop it and answer everything it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return "".join(self.output)


@pytest.fixture
def start_flower(settings) -> Iterator[Callable[..., Flower]]:
    started: list[Flower] = []

    def start(**env: str) -> Flower:
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("BOOMERANG_")}
        base.update(
            DATABASE_URL=settings.database_url,
            REDIS_URL=settings.redis_url,
            BOOMERANG_FLOWER_PORT=str(port),
        )
        base.update(env)
        flower = Flower(base, port)
        started.append(flower)
        return flower

    yield start
    for flower in started:
        flower.stop()


def test_flower_refuses_a_request_without_the_configured_login(start_flower):
    flower = start_flower(BOOMERANG_FLOWER_BASIC_AUTH="user:pw")
    flower.wait_until(lambda: flower.get() == 401, "401 without a login")

    assert flower.get("user:wrong") == 401
    assert flower.get("user:pw") == 200


def test_without_a_configured_login_flower_makes_one_and_prints_it_once(start_flower):
    flower = start_flower()
    flower.wait_until(lambda: "flower login: " in "".join(flower.output), "login line")
    match = re.search(r"^flower login: (admin:(\S+))$", "".join(flower.output), re.MULTILINE)
    assert match, flower.output
    login, password = match.groups()
    assert len(password) >= 32

    flower.wait_until(lambda: flower.get() == 401, "401 without a login")
    assert flower.get(login) == 200
    assert flower.get("admin:guess") == 401

    printed = flower.stop()
    assert printed.count(password) == 1


@pytest.mark.parametrize("path", ["/metrics", "/healthcheck"])
def test_flowers_metrics_and_healthcheck_ask_for_the_login_too(start_flower, path):
    flower = start_flower(BOOMERANG_FLOWER_BASIC_AUTH="user:pw")
    flower.wait_until(lambda: flower.get() == 401, "401 without a login")

    assert flower.get(path=path) == 401
    assert flower.get("user:wrong", path=path) == 401
    assert flower.get("user:pw", path=path) == 200


def test_flower_reads_the_queues_through_sentinel(start_flower, tmp_path):
    group = SentinelGroup(tmp_path)
    group.start()
    try:
        flower = start_flower(REDIS_URL=group.url, BOOMERANG_FLOWER_BASIC_AUTH="user:pw")
        # Queue lengths are read from the broker itself: the primary the sentinels name.
        flower.wait_until(
            lambda: flower.get("user:pw", path="/api/queues/length") == 200, "queue lengths"
        )
    finally:
        group.stop()
