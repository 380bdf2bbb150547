"""The benchmark's own processes beside the stack (the receiver, the reference servers), by name,
each logged to a file and always stopped."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests

from tests.support.processes import start_process, stop_process


class Processes:
    """Subprocesses in their own sessions; ``stop_all`` ends each process group it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start ``command`` as ``name``, logging to ``<name>.log``."""
        process = start_process(command, env, self.log_dir / f"{name}.log")
        self.started[name] = process
        return process

    def log(self, name: str) -> str:
        """Everything the named process wrote."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, timeout: float = 15) -> None:
        """SIGTERM the named process's group, SIGKILL it if it lingers."""
        process = self.started.pop(name, None)
        if process is not None:
            stop_process(process, timeout=timeout)

    def stop_all(self) -> None:
        """Stop every process still running."""
        for name in list(self.started):
            self.stop(name)


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Block until ``url`` answers 200; fail if ``process`` exits first or time runs out."""
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
