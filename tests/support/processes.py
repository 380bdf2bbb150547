"""Subprocesses in their own process groups, logged to files, and always stopped whole."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support import BIN, REPO

# Below Linux's ephemeral range (32768-60999): a port handed out by bind(0) comes from that
# range, where the next outgoing connection of any process may take it before our server binds
# it, and a health check would then reach somebody else's server.
LISTEN_PORTS = range(20000, 32000)
# Its own generator: a test plugin that seeds ``random`` alike in every test process would have
# processes starting servers at the same moment pick the same ports.
_PORTS = random.SystemRandom()


def free_port() -> int:
    """A loopback port nothing listens on right now, outside the ephemeral range."""
    for _ in range(200):
        port = _PORTS.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port to listen on")


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each is free only until taken, so two picked apart could
    be the same one (two servers of one group then race for it, and one cannot listen)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def start_process(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``command`` from the repository in a session of its own, output appended to
    ``log_path``, with the virtualenv's scripts first on the PATH."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Send ``sig`` to the process group and wait; SIGKILL the group if it lingers."""
    stop_processes([process], sig, timeout)


def stop_processes(
    processes: list[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 20
) -> None:
    """Send ``sig`` to every process group at once, then wait for all within ``timeout``;
    SIGKILL the groups that linger. At once, so a stack stops in its slowest part's time, not in
    the sum of its parts'."""
    signalled = []
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
                signalled.append(process)
    deadline = time.monotonic() + timeout
    for process in signalled:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    for process in processes:
        # Children that outlived their leader (a worker's pool) still carry the group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
