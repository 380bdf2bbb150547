"""Shared pieces of the benchmarks: percentiles, subprocesses that always get cleaned up, and a
client for the receiver's control API."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Processes:
    """Subprocesses in their own sessions; ``stop_all`` ends each process group it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, **env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, timeout: float = 15) -> None:
        process = self.started.pop(name, None)
        if process is not None:
            stop_group(process, timeout)

    def stop_all(self) -> None:
        for name in list(self.started):
            self.stop(name)


def stop_group(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass
    # Children that outlived their leader (a worker's pool) still carry the group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


class ReceiverClient:
    """Reads what the receiver process recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.session = requests.Session()

    def url(self, path: str) -> str:
        return self.base_url + path

    def stats(self, path: str) -> dict[str, int]:
        return self.session.get(self.url("/_stats"), params={"path": path}, timeout=10).json()

    def records(self, path: str) -> list[tuple[str, float]]:
        answer = self.session.get(self.url("/_records"), params={"path": path}, timeout=60)
        return [(wid, at) for wid, at in answer.json()["records"]]

    def wait_unique(self, path: str, expected: int, timeout: float) -> bool:
        """Block until ``expected`` distinct webhook-ids reached ``path``; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats(path)["unique"] >= expected:
                return True
            time.sleep(0.1)
        return self.stats(path)["unique"] >= expected
