"""A private Postgres server on a free port, so a test can freeze it without touching anyone
else's databases.

initdb and postgres refuse to run as root; run as root, both are run as the ``postgres`` user,
with the data directory in a fresh temporary directory that user owns. It is removed on stop.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

from tests.support.processes import free_port, stop_process

SERVER_USER = "postgres"


def server_program(name: str) -> str:
    """``initdb`` or ``postgres``: from the PATH, else from Debian's versioned directories."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server")
    return str(candidates[-1])


def _as_server_user() -> dict[str, Any]:
    """Popen arguments that drop root to the server user; none for anyone else."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(SERVER_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class PostgresServer:
    """initdb into a temporary directory, then postgres on a free port of ``host`` (loopback
    unless a test serves other network namespaces, which ``trusted_network`` then lets in)."""

    def __init__(self, log_dir: Path, host: str = "127.0.0.1", trusted_network: str | None = None):
        self.port = free_port()
        self.host = host
        self.trusted_network = trusted_network
        self.log_dir = log_dir
        self.data_dir: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The server, without a database (as TEST_POSTGRES_URL)."""
        return f"postgresql://postgres@{self.host}:{self.port}"

    def start(self) -> None:
        """Create the cluster, start the server and wait until it accepts connections."""
        home = Path(tempfile.mkdtemp(prefix="boomerang-pg-"))
        self.data_dir = home / "data"
        drop = _as_server_user()
        if drop:
            os.chown(home, drop["user"], drop["group"])
        log_path = self.log_dir / "postgres.log"
        with open(log_path, "ab") as log:
            initdb = [server_program("initdb"), "-D", str(self.data_dir), "-U", "postgres"]
            subprocess.run(
                [*initdb, "--auth=trust", "-E", "UTF8", "--no-sync"],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
                cwd=home,
                **drop,
            )
            if self.trusted_network:
                with open(self.data_dir / "pg_hba.conf", "a") as hba:
                    hba.write(f"host all all {self.trusted_network} trust\n")
            command = [server_program("postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
            command += ["-c", f"listen_addresses={self.host}"]
            command += ["-c", f"unix_socket_directories={home}"]
            # A scratch server: durability would only slow the tests down.
            command += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            command += ["-c", "full_page_writes=off", "-c", "max_connections=200"]
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=home,
                start_new_session=True,
                **drop,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                psycopg2.connect(self.url + "/postgres", connect_timeout=1).close()
                return
            except psycopg2.OperationalError:
                if self.process.poll() is not None:
                    log_text = log_path.read_text()
                    raise RuntimeError(f"private postgres exited:\n{log_text}") from None
                time.sleep(0.1)
        raise RuntimeError("private postgres did not start")

    def _server_pids(self) -> list[int]:
        """The postmaster, then every process it forked (backends and helpers). Each child
        calls setsid(), so the process group holds the postmaster alone."""
        assert self.process is not None
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == self.process.pid:
                children.append(int(stat.parent.name))
        return [self.process.pid, *children]

    def _signal_all(self, sig: int) -> None:
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def hang(self) -> None:
        """Freeze every process of the server (SIGSTOP): connections stay open, nothing answers.
        The postmaster goes first, so no new backend starts while the rest are stopped."""
        self._signal_all(signal.SIGSTOP)

    def unhang(self) -> None:
        """Let the frozen server go on (SIGCONT)."""
        self._signal_all(signal.SIGCONT)

    def stop(self) -> None:
        """Stop it (fast shutdown) and remove its files."""
        if self.process is not None:
            # A frozen server cannot act on SIGINT; let it go first.
            self._signal_all(signal.SIGCONT)
            stop_process(self.process, signal.SIGINT, timeout=20)
        self.process = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
        self.data_dir = None
